"""`hccr-eval`: evaluate a model of any format on a split of a preprocessed directory."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from beam_preprocess import cli_errors, dataclass_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    from trainers.serving.evaluation import EvalConfig
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
    p.add_argument("--out", required=True, help="output directory for report.json and plots")
    # Every EvalConfig field is a flag, with the default and help of the dataclass.
    dataclass_flags.add_flags(p, EvalConfig, names={"num_confused": "--confused"})
    p.add_argument("--quiet", dest="progress", action="store_false",
                   help="no progress output (as --no-progress)")
    return p


@cli_errors.entry_point("hccr-eval")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.max_examples is not None and args.max_examples < 1):
        print("hccr-eval: --batch-size and --max-examples must be positive", file=sys.stderr)
        return 2
    from trainers.serving import evaluation, inference
    from trainers.serving.tensorrt import MissingDependencyError
    config = dataclass_flags.from_args(evaluation.EvalConfig, args)
    inference.configure_tf_threads(config.threads)
    try:
        report = evaluation.evaluate(args.model, args.data, out_dir=args.out,
                                     **dataclasses.asdict(config))
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
