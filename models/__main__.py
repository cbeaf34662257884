"""`python -m models`: parameters, FLOPs and sizes of every preset.

    python -m models --num-classes 3755 --image-size 64
"""
import argparse
import os


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    parser.add_argument("--num-classes", type=int, default=3755,
                        help="classes of the character classifiers (default: 3755)")
    parser.add_argument("--image-size", type=int, default=64,
                        help="classifier input side and text-line height (default: 64)")
    parser.add_argument("--line-num-classes", type=int, default=None,
                        help="charset size of the CRNNs (default: num-classes + 100)")
    parser.add_argument("--line-width", type=int, default=256,
                        help="text-line width for the CRNN FLOP count (default: 256)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.complexity import format_table, preset_table

    print(format_table(preset_table(args.num_classes, args.image_size, args.line_num_classes,
                                    args.line_width)))


if __name__ == "__main__":
    main()
