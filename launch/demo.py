"""The end-to-end demo (the README's first command): the same commands a user would type.

Each stage prints its command line, runs it, and records how long it took; a summary table
closes the run. `--size small` (default) is the README demo, and what CI runs
(tests/test_demo.py checks that both models learn); `--size tiny` checks the plumbing in
about a minute and a half (its models are too small and too briefly trained to be accurate).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from beam_preprocess import cli_errors

SIZES = {
    # classes, writers (one GNT file each), DGRL pages per writer, synthetic lines composed from
    # GNT samples (per split, 8-24 characters each), and how long each model trains.
    "tiny": dict(classes=20, writers=6, samples_per_class=3, pages=1, synth_lines=120, epochs=4,
                 crnn_epochs=3, crnn_steps=8),
    "small": dict(classes=100, writers=10, samples_per_class=4, pages=2, synth_lines=2000,
                  epochs=15, crnn_epochs=10, crnn_steps=100),
}
# hccr-demo writes this file into every work directory it creates, and deletes (replaces) a
# directory only when it finds the file there: never a directory it did not make.
MARKER = ".hccr-demo"
IMAGE_SIZE = 32  # the demo trains at 32x32 (and 32-pixel lines) to stay within minutes on a CPU
VALIDATION_FRACTION = 0.2
SHOWN_PREDICTIONS = 10  # per predict stage; every prediction is in its file under predictions/
# The summary's output folders, in the order the stages make them, and the plots in them.
OUTPUTS = ("raw", "chars", "lines", "clf_run", "crnn_run", "clf_eval", "crnn_eval", "export",
           "int8_eval", "predictions")
PLOTS = {"clf_run": ("curves.png",), "crnn_run": ("curves.png",),
         "clf_eval": ("confusion.png", "confused_samples.png"),
         "int8_eval": ("confusion.png", "confused_samples.png")}


@dataclasses.dataclass
class Stage:
    name: str
    argv: list
    seconds: float = 0.0


def _bin(name: str) -> str:
    """A console script of this environment (next to the running interpreter)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def run_stage(stage: Stage, log, capture: bool = False) -> subprocess.CompletedProcess:
    """Runs one stage, printing its command first; stops the demo if it fails."""
    shown = [os.path.basename(stage.argv[0])] + stage.argv[1:]
    print(f"\n$ {shlex.join(shown)}", file=log, flush=True)
    start = time.monotonic()
    proc = subprocess.run(stage.argv, stdout=subprocess.PIPE if capture else None, text=True)
    stage.seconds = time.monotonic() - start
    if proc.returncode != 0:
        if capture and proc.stdout:
            print(proc.stdout, file=log)
        raise SystemExit(f"hccr-demo: stage {stage.name!r} failed with exit status "
                         f"{proc.returncode}: {shlex.join(stage.argv)}")
    return proc


def show_predictions(output: str, path: str, log, limit: int = SHOWN_PREDICTIONS) -> int:
    """Writes every line of a predict stage's `output` to `path` and prints the first `limit`,
    then how many more there are and where; returns the number of lines."""
    lines = output.splitlines()
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    for line in lines[:limit]:
        print(line, file=log)
    if len(lines) > limit:
        print(f"... and {len(lines) - limit} more; all in {path}", file=log)
    else:
        print(f"(all {len(lines)} in {path})", file=log)
    log.flush()
    return len(lines)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def unseen_writer(raw: str) -> str:
    """The first writer that `--validation-fraction` puts in the validation split.

    The same rule hccr-preprocess applies, so both models are shown a writer they never saw.
    """
    from beam_preprocess.job import splits
    paths = sorted(glob.glob(os.path.join(raw, "*.gnt")))
    assigned, _ = splits.assign_splits(paths, "auto", VALIDATION_FRACTION)
    held_out = sorted(splits.writer_id(p) for p, split in assigned.items()
                      if split == splits.VALIDATION)
    if not held_out:
        raise SystemExit(f"hccr-demo: no validation writer among {len(paths)} GNT files in "
                         f"{raw}")
    return held_out[0]


def claim_workdir(workdir: str) -> None:
    """Empties `workdir` for a new run when hccr-demo made it (its MARKER file is there) or
    creates it; any other existing path is refused, untouched.

    Raises:
      cli_errors.UserError: `workdir` exists and hccr-demo did not make it.
    """
    if os.path.lexists(workdir):
        if os.path.isdir(workdir) and not os.path.islink(workdir) and not os.listdir(workdir):
            pass  # an empty directory holds nothing to lose
        elif os.path.isdir(workdir) and not os.path.islink(workdir) and os.path.isfile(
                os.path.join(workdir, MARKER)):
            shutil.rmtree(workdir)
        else:
            raise cli_errors.UserError(
                f"--workdir {workdir} exists and was not made by hccr-demo (no {MARKER} file "
                f"in it): refusing to replace it; choose a new directory or remove it yourself")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MARKER), "w", encoding="utf-8") as f:
        f.write("made by hccr-demo, which replaces this directory on its next run\n")


def run_demo(workdir: str, size: str = "small", seed: int = 0, log=sys.stdout) -> dict:
    """Runs every stage of the demo into `workdir` and returns the summary.

    Stages: synthesize -> inspect -> preprocess (chars, lines) -> train (classifier, CRNN) ->
    evaluate -> export (TFLite INT8, ONNX) -> evaluate the INT8 model -> predict.
    """
    cfg = SIZES[size]
    workdir = os.path.abspath(workdir)  # the summary names places the user can open anywhere
    paths = {name: os.path.join(workdir, *parts) for name, parts in {
        "raw": ("raw",), "chars": ("data", "chars"), "lines": ("data", "lines"),
        "clf_run": ("runs", "classifier"), "crnn_run": ("runs", "crnn"),
        "clf_eval": ("eval", "classifier"), "crnn_eval": ("eval", "crnn"),
        "int8_eval": ("eval", "classifier-tflite-int8"), "export": ("export", "classifier"),
        "predictions": ("predictions",),
    }.items()}
    claim_workdir(workdir)
    stages: list[Stage] = []

    def stage(name, *argv, capture=False):
        s = Stage(name, [_bin(argv[0]), *map(str, argv[1:])])
        stages.append(s)
        return run_stage(s, log, capture)

    raw = paths["raw"]
    stage("synthesize", "hccr-synth", "--out", raw, "--writers", cfg["writers"],
          "--classes", cfg["classes"], "--samples-per-class", cfg["samples_per_class"],
          "--pages", cfg["pages"], "--seed", seed)
    facts = json.loads(stage("inspect", "hccr-inspect", "--no-counts", raw, capture=True).stdout)
    print(f"  {facts['gnt']['samples']} character samples of {facts['gnt']['classes']} classes, "
          f"{facts['dgrl']['lines']} text lines on {facts['dgrl']['pages']} pages", file=log)
    stage("preprocess chars", "hccr-preprocess", "--input", os.path.join(raw, "*.gnt"),
          "--output", paths["chars"], "--image-size", IMAGE_SIZE, "--charset", "data",
          "--validation-fraction", VALIDATION_FRACTION, "--verify")
    stage("preprocess lines", "hccr-preprocess", "--task", "lines",
          "--input", os.path.join(raw, "*.dgrl"), os.path.join(raw, "*.gnt"),
          "--synth-lines", cfg["synth_lines"], "--output", paths["lines"],
          "--image-size", IMAGE_SIZE, "--charset", "data",
          "--validation-fraction", VALIDATION_FRACTION,
          "--seed", seed, "--verify")
    stage("train classifier", "hccr-train", "--config", "demo", "--data", paths["chars"],
          "--workdir", paths["clf_run"], "--set", f"epochs={cfg['epochs']}")
    stage("train crnn", "hccr-train", "--config", "demo_crnn", "--data", paths["lines"],
          "--workdir", paths["crnn_run"], "--set", f"epochs={cfg['crnn_epochs']}",
          "--set", f"steps_per_epoch={cfg['crnn_steps']}")
    clf_model = os.path.join(paths["clf_run"], "best.keras")
    crnn_model = os.path.join(paths["crnn_run"], "final.keras")
    stage("evaluate classifier", "hccr-eval", "--model", clf_model, "--data", paths["chars"],
          "--split", "validation", "--out", paths["clf_eval"])
    stage("evaluate crnn", "hccr-eval", "--model", crnn_model, "--data", paths["lines"],
          "--split", "validation", "--out", paths["crnn_eval"])
    stage("export", "hccr-export", "--model", clf_model, "--data", paths["chars"],
          "--formats", "tflite_int8,onnx", "--eval-split", "validation",
          "--out", paths["export"])
    int8_model = os.path.join(paths["export"], "tflite_int8", "model.tflite")
    stage("evaluate int8", "hccr-eval", "--model", int8_model, "--data", paths["chars"],
          "--split", "validation", "--out", paths["int8_eval"])
    unseen = unseen_writer(raw)
    print(f"  predicting writer {unseen} (validation split: neither model trained on it)",
          file=log)
    os.makedirs(paths["predictions"], exist_ok=True)
    predicted = stage("predict chars", "hccr-predict", "--model", int8_model, "--top-k", 3,
                      os.path.join(raw, f"{unseen}-synth.gnt"), capture=True)
    show_predictions(predicted.stdout, os.path.join(paths["predictions"], "chars.tsv"), log)
    predicted = stage("predict lines", "hccr-predict", "--model", crnn_model, "--data",
                      paths["lines"], os.path.join(raw, f"{unseen}-P01.dgrl"), capture=True)
    show_predictions(predicted.stdout, os.path.join(paths["predictions"], "lines.tsv"), log)

    clf = _read_json(os.path.join(paths["clf_eval"], "report.json"))["metrics"]
    crnn = _read_json(os.path.join(paths["crnn_eval"], "report.json"))["metrics"]
    int8 = _read_json(os.path.join(paths["int8_eval"], "report.json"))["metrics"]
    exported = _read_json(os.path.join(paths["export"], "export_report.json"))["formats"]
    results = {
        "classifier top-1 / top-5 (validation)":
            f"{100 * clf['top1_accuracy']:.1f}% / {100 * clf['top5_accuracy']:.1f}%",
        "classifier TFLite INT8 top-1": f"{100 * int8['top1_accuracy']:.1f}%",
        "CRNN CER greedy / beam (validation)":
            f"{100 * crnn['greedy']['cer']:.1f}% / {100 * crnn['beam']['cer']:.1f}%",
    }
    for fmt, entry in exported.items():
        if entry.get("status") == "ok":
            results[f"export {fmt}"] = (f"{entry['size_bytes'] / 1e6:.2f} MB, "
                                        f"{entry.get('latency_ms', float('nan')):.2f} ms/image")
    plots = [os.path.join(paths[name], plot) for name, names in PLOTS.items() for plot in names
             if os.path.exists(os.path.join(paths[name], plot))]
    return {"workdir": workdir, "size": size, "results": results, "paths": paths,
            "outputs": {name: paths[name] for name in OUTPUTS}, "plots": plots,
            "stages": [{"name": s.name, "seconds": round(s.seconds, 1),
                        "command": shlex.join(s.argv)} for s in stages]}


def print_summary(summary: dict, log=sys.stdout) -> None:
    print(f"\n=== hccr demo summary ({summary['size']}) ===", file=log)
    width = max(len(s["name"]) for s in summary["stages"])
    for s in summary["stages"]:
        print(f"  {s['name']:<{width}}  {s['seconds']:7.1f} s", file=log)
    for key, value in summary.get("results", {}).items():
        print(f"  {key}: {value}", file=log)
    print(f"  total {sum(s['seconds'] for s in summary['stages']):.0f} s", file=log)
    print("outputs:", file=log)
    width = max(len(name) for name in summary["outputs"])
    for name, path in summary["outputs"].items():
        print(f"  {name:<{width}}  {path}/", file=log)
    print("plots:", file=log)
    for path in summary["plots"]:
        print(f"  {path}", file=log)


@cli_errors.entry_point("hccr-demo")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="hccr-demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the whole pipeline on a synthetic dataset rendered from the installed "
                    "CJK fonts, printing every command it runs.",
        epilog="""examples:
  hccr-demo                                  the README demo (--size small, 6-12 minutes)
  hccr-demo --size tiny --workdir /tmp/demo  every stage in 1.5-3 minutes
  hccr-demo --seed 1 --workdir runs/demo_seed1

stages: synthesize writers (GNT + DGRL), inspect, preprocess chars and lines (Beam), train a
classifier and a CRNN, evaluate, export (TFLite INT8, ONNX), evaluate INT8, predict.""")
    parser.add_argument("--workdir", default="demo_output",
                        help="output directory: created, or replaced when an earlier hccr-demo "
                             f"made it (its {MARKER} file); any other directory is refused")
    parser.add_argument("--size", choices=sorted(SIZES), default="small",
                        help="dataset and training size: small (default, the README demo: both "
                             "models learn, 6-12 minutes on 2 cores) or tiny (every stage "
                             "in 1.5-3 minutes, models not accurate)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = run_demo(args.workdir, args.size, args.seed)
    print_summary(summary)
    with open(os.path.join(args.workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
