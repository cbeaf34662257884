"""`hccr-predict`: recognize characters or text lines in image, GNT and DGRL files."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from beam_preprocess import cli_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    from trainers.serving.inference import TTA_MODES
    p = argparse.ArgumentParser(
        prog="hccr-predict",
        description="Recognize handwritten characters (classifier) or text lines (CRNN) in "
                    "image files (PNG, JPEG, ...; any size; dark ink on a light, grey or "
                    "unevenly lit background, or light ink on a dark one), "
                    "CASIA .gnt files (every sample) and .dgrl files (every text line). "
                    "Directories are searched for such files. The charset and normalization "
                    "come from --data DIR, or from charset.txt and model_info.json next to the "
                    "model (hccr-export writes them into every export directory).",
        epilog="Each input stands on its own: one that cannot be read or has no ink gets one "
               "ERROR line naming it and the others are still predicted; the exit status is 1 "
               "if any input failed (or the model cannot be loaded), 0 otherwise. "
               "Example: hccr-predict --model export/tflite_int8/model.tflite --top-k 3 "
               "char.png page.dgrl --json")
    p.add_argument("--model", required=True,
                   help=".keras file, SavedModel directory, .tflite, .onnx or .engine")
    p.add_argument("--data", default=None,
                   help="preprocessed directory for the charset and normalization (optional "
                        "when charset.txt is next to the model)")
    p.add_argument("files", nargs="+", help="image, .gnt or .dgrl files, or directories")
    p.add_argument("--top-k", type=int, default=5, help="candidates per input (5)")
    p.add_argument("--beam-width", type=int, default=10, help="CTC beam width for lines (10)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per model call (32)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for TFLite/onnxruntime and the CTC beam search (default: all "
                        "cores)")
    p.add_argument("--tta", choices=TTA_MODES, default="off",
                   help="test-time augmentation of a classifier: probabilities averaged over "
                        "one-pixel shifts (shift, 5 model calls per input), +-8%% scalings "
                        "(scale, 3) or both (all, 7); default off")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="print one JSON document: {model, task, results: [...]}")
    out.add_argument("--jsonl", action="store_true", help="print one JSON object per input")
    return p


def _text_line(result: dict) -> str:
    if "error" in result:
        return f"{result['source']}\tERROR\t{result['error']}"
    key = "char" if "char" in result["top_k"][0] else "text"
    top = "  ".join(f"{c[key]}:{c['probability']:.3f}" for c in result["top_k"])
    truth = ""
    if "truth" in result:
        truth = f"\ttruth={result['truth']} {'ok' if result['correct'] else 'WRONG'}"
    return f"{result['source']}\t{result['prediction']}\t{result['confidence']:.3f}{truth}\t{top}"


@cli_errors.entry_point("hccr-predict")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        print("hccr-predict: --top-k and --batch-size must be positive", file=sys.stderr)
        return 2
    from trainers.serving import inference, predict
    from trainers.serving.tensorrt import MissingDependencyError
    try:
        predictor = predict.Predictor(args.model, args.data, top_k=args.top_k,
                                      beam_width=args.beam_width, threads=args.threads,
                                      tta=args.tta)
        results_iter = predictor.predict_files(args.files, batch_size=args.batch_size)
        results, labelled, correct, failed, total = [], 0, 0, 0, 0
        for result in results_iter:
            total += 1
            if "error" in result:
                failed += 1
                if args.json or args.jsonl:  # the text output has the line already
                    print(f"hccr-predict: {result['source']}: {result['error']}",
                          file=sys.stderr, flush=True)
            if "correct" in result:
                labelled += 1
                correct += result["correct"]
            if args.json:
                results.append(result)
            elif args.jsonl:
                print(json.dumps(result, ensure_ascii=False), flush=True)
            else:
                print(_text_line(result), flush=True)
    except (FileNotFoundError, ValueError, inference.ModelFormatError,
            MissingDependencyError) as err:
        cli_errors.show_traceback(err)
        print(f"hccr-predict: {err}", file=sys.stderr)
        return 1
    if args.json:
        json.dump({"model": args.model, "task": predictor.task, "tta": predictor.tta,
                   "model_info": dataclasses.asdict(predictor.info), "results": results},
                  sys.stdout, ensure_ascii=False, indent=1)
        print()
    if labelled:
        print(f"{correct}/{labelled} labelled inputs correct ({100 * correct / labelled:.1f}%)",
              file=sys.stderr)
    if failed:
        print(f"hccr-predict: {failed} of {total} inputs failed (see their ERROR lines)",
              file=sys.stderr)
        return 1
    if not total:
        print("hccr-predict: no input files found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
