"""`hccr-export`: export a trained .keras model to SavedModel, TFLite, ONNX and TensorRT."""
from __future__ import annotations

import argparse
import os
import sys

from beam_preprocess import cli_errors, dataclass_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Exit statuses: every format exported; some failed; only TensorRT-style stages were
# unavailable (a missing dependency or GPU), everything else exported.
EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 3


def build_parser() -> argparse.ArgumentParser:
    from trainers.serving.export import ALL_FORMATS, DEFAULT_FORMATS, ExportConfig
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
    p.add_argument("--out", required=True, help="output directory")
    # Every ExportConfig field is a flag, with the default and help of the dataclass. --formats
    # stays text here and is expanded by export.parse_formats in main (groups, clear errors).
    dataclass_flags.add_flags(
        p, ExportConfig, converters={"formats": str},
        help_overrides={"formats": "comma-separated formats or groups (all, default, tflite, "
                                   "tensorrt)"})
    p.add_argument("--quiet", dest="progress", action="store_false",
                   help="no progress output (as --no-progress)")
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
    config = dataclass_flags.from_args(export.ExportConfig, args, formats=formats)
    inference.configure_tf_threads(config.threads)
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
