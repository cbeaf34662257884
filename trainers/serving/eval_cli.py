"""`hccr-eval`: evaluate a model of any format on a split of a preprocessed directory."""
from __future__ import annotations

import argparse
import os
import sys

from beam_preprocess import cli_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hccr-eval",
        description="Evaluate a .keras model, a SavedModel, a TFLite or an ONNX file (or a "
                    "TensorRT engine on a GPU host) on a split of a preprocessed directory. "
                    "Classifiers: top-1/top-5 accuracy, weighted F1, per-class precision and "
                    "recall (per_class.csv), most-confused pairs, a confusion heatmap "
                    "(confusion.png) and real samples of each confused pair beside correct "
                    "samples of the class they were taken for (confused_samples.png). Line "
                    "models: CER and line accuracy with greedy and beam "
                    "decoding (errors.csv). Everything goes to OUT/report.json.",
        epilog="Example: hccr-eval --model export/tflite_int8/model.tflite --data data/chars "
               "--split test --out eval/int8")
    p.add_argument("--model", required=True,
                   help=".keras file, SavedModel directory, .tflite, .onnx or .engine")
    p.add_argument("--data", required=True, help="preprocessed directory (metadata.json, shards)")
    p.add_argument("--split", default="test", help="split to evaluate (test)")
    p.add_argument("--out", required=True, help="output directory for report.json and plots")
    p.add_argument("--batch-size", type=int, default=64, help="examples per model call (64)")
    p.add_argument("--max-examples", type=int, default=None,
                   help="evaluate only the first N examples (default: the whole split)")
    p.add_argument("--beam-width", type=int, default=10, help="CTC beam width for lines (10)")
    p.add_argument("--confused", type=int, default=20,
                   help="most-confused pairs to list and plot (20)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for TFLite/onnxruntime/TensorFlow (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


@cli_errors.entry_point("hccr-eval")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.max_examples is not None and args.max_examples < 1):
        print("hccr-eval: --batch-size and --max-examples must be positive", file=sys.stderr)
        return 2
    from trainers.serving import evaluation, inference
    from trainers.serving.tensorrt import MissingDependencyError
    inference.configure_tf_threads(args.threads)
    try:
        report = evaluation.evaluate(args.model, args.data, args.split, args.out,
                                     batch_size=args.batch_size, max_examples=args.max_examples,
                                     beam_width=args.beam_width, num_confused=args.confused,
                                     progress=not args.quiet, threads=args.threads)
    except (FileNotFoundError, ValueError, inference.ModelFormatError,
            MissingDependencyError) as err:
        cli_errors.show_traceback(err)
        print(f"hccr-eval: {err}", file=sys.stderr)
        return 1
    evaluation.print_summary(report)
    print(f"report: {os.path.join(args.out, evaluation.REPORT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
