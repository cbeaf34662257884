"""`hccr-export`: export a trained .keras model to SavedModel, TFLite, ONNX and TensorRT."""
from __future__ import annotations

import argparse
import os
import sys

from beam_preprocess import cli_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Exit statuses: every format exported; some failed; only TensorRT-style stages were
# unavailable (a missing dependency or GPU), everything else exported.
EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 3


def build_parser() -> argparse.ArgumentParser:
    from trainers.serving.export import ALL_FORMATS, DEFAULT_FORMATS
    p = argparse.ArgumentParser(
        prog="hccr-export",
        description="Export a trained .keras model. Every format goes to OUT/<format>/ (written "
                    "in a temporary directory, then renamed) with charset.txt and "
                    "model_info.json, is evaluated like hccr-eval on a split and timed on CPU; "
                    "OUT/export_report.json holds each format's size, latency and accuracy "
                    "delta against the Keras model.",
        epilog="Formats: " + ", ".join(ALL_FORMATS) + "; groups: default (" +
               ",".join(DEFAULT_FORMATS) + "), tflite, tensorrt, all. "
               "Exit status 0: all exported; 1: a format failed; 3: only unavailable stages "
               "(TensorRT without TensorRT or a GPU). Example: hccr-export --model "
               "work/best.keras --data data/chars --formats all --out export/")
    p.add_argument("--model", required=True, help="the trained .keras file")
    p.add_argument("--data", required=True,
                   help="preprocessed directory: charset, metadata, calibration and eval splits")
    p.add_argument("--formats", default="default",
                   help="comma-separated formats or groups (default)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--eval-split", default=None,
                   help="split for the accuracy delta (default: test, else validation)")
    p.add_argument("--eval-examples", type=int, default=500,
                   help="examples evaluated per format (500; 0 skips evaluation)")
    p.add_argument("--calibration-split", default=None,
                   help="split for INT8 calibration (default: train)")
    p.add_argument("--calibration-examples", type=int, default=200,
                   help="INT8 calibration images (200)")
    p.add_argument("--line-width", type=int, default=None,
                   help="fixed width of the CRNN's batch-1 TFLite/TensorRT models (default: 95th "
                        "percentile of the eval split's widths, rounded up to 16)")
    p.add_argument("--top-k", type=int, default=5,
                   help="candidates returned by the SavedModel serving signature (5)")
    p.add_argument("--latency-runs", type=int, default=30,
                   help="batch-1 runs timed per format (30; 0 skips timing)")
    p.add_argument("--throughput-batch", type=int, default=32,
                   help="batch size of the throughput measurement (32)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for every runtime (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


@cli_errors.entry_point("hccr-export")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from trainers.serving import export, inference
    try:
        formats = export.parse_formats(args.formats)
    except ValueError as err:
        cli_errors.show_traceback(err)
        print(f"hccr-export: {err}", file=sys.stderr)
        return 2
    inference.configure_tf_threads(args.threads)
    config = export.ExportConfig(
        formats=formats, eval_split=args.eval_split, eval_examples=args.eval_examples,
        calibration_split=args.calibration_split,
        calibration_examples=args.calibration_examples, line_width=args.line_width,
        top_k=args.top_k, latency_runs=args.latency_runs,
        throughput_batch=args.throughput_batch, threads=args.threads, progress=not args.quiet)
    try:
        report = export.export(args.model, args.data, args.out, config)
    except (FileNotFoundError, ValueError) as err:
        cli_errors.show_traceback(err)
        print(f"hccr-export: {err}", file=sys.stderr)
        return 1
    print(export.summary_table(report))
    statuses = {e["status"] for e in report["formats"].values()}
    for name, entry in report["formats"].items():
        if entry["status"] != "ok":
            print(f"{name}: {entry['status']}: {entry.get('error', '')}", file=sys.stderr)
    print(f"report: {os.path.join(args.out, export.REPORT_FILE)}")
    if statuses <= {"ok"}:
        return EXIT_OK
    if statuses <= {"ok", "unavailable"}:
        return EXIT_UNAVAILABLE
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
