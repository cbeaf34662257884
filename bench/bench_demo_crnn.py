"""Why the demo's CRNN recipe is what it is: `demo_crnn` against the variants it replaced.

Builds the `hccr-demo --size small` data (100 classes, 10 synthetic writers, 2 DGRL pages each,
32-pixel lines, one writer held out for validation), then trains each variant and evaluates it
on every validation line with `hccr-eval`:

- `demo_crnn`: the preset as the demo runs it (`crnn_small`, one BiLSTM layer, 1,000 steps on
  lines of 8-24 characters);
- `two BiLSTM layers`: the same with `lstm_layers=2` (what `crnn_tiny` and `crnn` stack);
- `bfloat16`: the same under `precision=mixed_bfloat16` (what `precision=auto` picks on CPU);
- `short lines`: lines of 2-8 characters for 2,000 steps (about the same time).

    python bench/bench_demo_crnn.py [--out /tmp/bench_demo_crnn] [--only demo_crnn,bfloat16]

Prints a Markdown table (also written to OUT/table.md, with OUT/results.json) for
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, REPO)
BIN = os.path.dirname(sys.executable)

from launch import demo  # noqa: E402  (the demo's own sizes and constants)

DEFAULT_LINE_CHARS = "8,24"  # hccr-preprocess' default, which the demo uses
VARIANTS = {
    # name: (characters per synthetic line, config overrides besides the demo's schedule)
    "demo_crnn": (DEFAULT_LINE_CHARS, []),
    "two BiLSTM layers": (DEFAULT_LINE_CHARS, ['model_overrides={"lstm_layers": 2}']),
    "bfloat16": (DEFAULT_LINE_CHARS, ["precision=mixed_bfloat16"]),
    "short lines": ("2,8", ["epochs=20"]),
}


def _run(argv: list[str], log_path: str) -> float:
    print("$", shlex.join(argv), flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}), see {log_path}: {shlex.join(argv)}")
    return time.perf_counter() - start


def _tool(name: str) -> str:
    return os.path.join(BIN, name)


def build_data(out: str, line_chars: str) -> str:
    """The demo's raw files (once) and its lines dataset with `line_chars` characters a line."""
    size = demo.SIZES["small"]
    raw = os.path.join(out, "raw")
    if not os.path.exists(os.path.join(raw, "synth.json")):
        _run([_tool("hccr-synth"), "--out", raw, "--writers", str(size["writers"]),
              "--classes", str(size["classes"]), "--samples-per-class",
              str(size["samples_per_class"]), "--pages", str(size["pages"]), "--seed", "0"],
             os.path.join(out, "synth.log"))
    lines = os.path.join(out, "lines-" + line_chars.replace(",", "-"))
    if not os.path.exists(os.path.join(lines, "metadata.json")):
        _run([_tool("hccr-preprocess"), "--task", "lines", "--input",
              os.path.join(raw, "*.dgrl"), os.path.join(raw, "*.gnt"),
              "--synth-lines", str(size["synth_lines"]), "--synth-line-chars", line_chars,
              "--output", lines, "--image-size", str(demo.IMAGE_SIZE), "--charset", "data",
              "--validation-fraction", str(demo.VALIDATION_FRACTION), "--seed", "0"],
             os.path.join(out, f"preprocess-{os.path.basename(lines)}.log"))
    return lines


def run_variant(out: str, name: str, line_chars: str, overrides: list[str]) -> dict:
    size = demo.SIZES["small"]
    data = build_data(out, line_chars)
    slug = name.replace(" ", "_")
    workdir, eval_dir = os.path.join(out, "run-" + slug), os.path.join(out, "eval-" + slug)
    subprocess.run(["rm", "-rf", workdir, eval_dir], check=True)
    train_s = _run([_tool("hccr-train"), "--config", "demo_crnn", "--data", data,
                    "--workdir", workdir, "--set", f"epochs={size['crnn_epochs']}",
                    "--set", f"steps_per_epoch={size['crnn_steps']}",
                    *sum((["--set", s] for s in overrides), [])],
                   os.path.join(out, f"train-{slug}.log"))
    _run([_tool("hccr-eval"), "--model", os.path.join(workdir, "final.keras"), "--data", data,
          "--split", "validation", "--out", eval_dir], os.path.join(out, f"eval-{slug}.log"))
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(eval_dir, "report.json")) as f:
        report = json.load(f)
    return {"variant": name, "line_chars": line_chars, "overrides": overrides,
            "train_seconds": train_s, "steps": metrics.get("step"),
            "final_loss": metrics.get("loss"), "val_loss": metrics.get("val_loss"),
            "precision": metrics.get("precision"), "parameters": metrics.get("parameters"),
            "examples": report.get("num_examples"),
            "cer_greedy": report["metrics"]["greedy"]["cer"],
            "line_accuracy_greedy": report["metrics"]["greedy"].get("line_accuracy"),
            "load_average_1min": os.getloadavg()[0]}


def markdown(results: list[dict]) -> str:
    rows = ["| variant | lines of | precision | params | steps | train time | final loss | "
            "validation CER (greedy) | line accuracy |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        accuracy = r["line_accuracy_greedy"]
        rows.append(f"| {r['variant']} | {r['line_chars'].replace(',', '-')} chars | "
                    f"{r['precision']} | {r['parameters']:,} | {r['steps']:,} | "
                    f"{r['train_seconds']:.0f} s | "
                    f"{r['final_loss']:.2f} | {100 * r['cer_greedy']:.1f} % | "
                    + ("" if accuracy is None else f"{100 * accuracy:.1f} %") + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_demo_crnn")
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name in names:
        line_chars, overrides = VARIANTS[name]
        results.append(run_variant(args.out, name, line_chars, overrides))
        print(json.dumps(results[-1]), flush=True)
    table = markdown(results)
    print(table)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
