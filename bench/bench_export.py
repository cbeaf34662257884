"""Benchmark of the exported formats on CPU: Keras, SavedModel, TFLite (float32, float16,
dynamic-range, INT8) and ONNX, for a classifier (`hccr_resnet_compact`) and a CRNN (`crnn`),
in one run.

For each model it calls `trainers.serving.export.export` (the code behind hccr-export), which writes
every format, evaluates each one with the hccr-eval code on the same examples of the test
split, and times it on CPU: batch-1 latency (median and p90 of `--latency-runs` runs after 3
warm-up runs) and throughput at batch 32 (the CRNN's TFLite models are batch-1, so their
"batch 32" is 32 sequential calls). Every runtime gets the same number of threads (`--threads`,
default: all cores). A trained model saved under mixed_bfloat16 is also measured as a float32
Keras model (`keras_float32`: the same weights, float32 compute), the baseline of the goal
"INT8 TFLite at least 2x faster than float32 Keras with under 0.5 point accuracy loss".

    .venv/bin/python bench/bench_export.py --work /tmp/bench          # prepares data + models
    .venv/bin/python bench/bench_export.py --chars-model runs/c/best.keras --chars-data d/chars \
        --lines-model runs/l/best.keras --lines-data d/lines --out /tmp/bench/export

With `--work DIR` and no models given, the data and models are made first with the project's
own tools (commands printed and run; skipped when their outputs exist): hccr-preprocess on the
shared real CASIA sample (21 classes; files 0-2 train, file 3 test; 64x64 characters, and
64-pixel-high lines of 4-8 real characters composed by --synth-lines), then hccr-train with the
casia-sample recipe on hccr_resnet_compact (5 epochs) and the hwdb2_crnn recipe (crnn, 3
epochs, Adam 1e-3). Training takes most of an hour on a 2-core CPU.

Prints one Markdown table per model and writes `bench_export.json` into `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SAMPLE = os.path.join(os.path.dirname(REPO), "shared", "data", "casia-hwdb-sample")
BIN = os.path.join(REPO, ".venv", "bin")


def _tool(name: str) -> str:
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else name


def _run(cmd: list[str], log: str) -> None:
    print("$ " + " ".join(cmd), flush=True)
    start = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    print(f"  done in {time.time() - start:.0f}s (log: {log})", flush=True)


def prepare(work: str) -> dict:
    """Data and trained models under `work` (made once; reused when present)."""
    os.makedirs(work, exist_ok=True)
    chars, lines = os.path.join(work, "chars64"), os.path.join(work, "lines64")
    globs = [f"--split-glob=train={SAMPLE}/train-000[0-2].gnt",
             f"--split-glob=test={SAMPLE}/train-0003.gnt"]
    if not os.path.exists(os.path.join(chars, "metadata.json")):
        _run([_tool("hccr-preprocess"), *globs, "--charset", "data", "--image-size", "64",
              "--output", chars], os.path.join(work, "preprocess_chars.log"))
    if not os.path.exists(os.path.join(lines, "metadata.json")):
        _run([_tool("hccr-preprocess"), "--task", "lines", *globs, "--charset", "data",
              "--image-size", "64", "--synth-lines", "3000", "--synth-line-chars", "4,8",
              "--output", lines], os.path.join(work, "preprocess_lines.log"))
    compact, crnn = os.path.join(work, "run_compact"), os.path.join(work, "run_crnn")
    if not os.path.exists(os.path.join(compact, "final.keras")):
        _run([_tool("hccr-train"), "--config", "casia-sample", "--data", chars, "--workdir",
              compact, "--set", "model=hccr_resnet_compact", "--set", "model_overrides={}",
              "--set", "epochs=5", "--set", "eval_split=test", "--set", "tensorboard=false"],
             os.path.join(work, "train_compact.log"))
    if not os.path.exists(os.path.join(crnn, "final.keras")):
        _run([_tool("hccr-train"), "--config", "hwdb2_crnn", "--data", lines, "--workdir", crnn,
              "--set", "epochs=3", "--set", "learning_rate=1e-3", "--set", "eval_split=test",
              "--set", "eval_steps=20", "--set", "early_stopping=false",
              "--set", "tensorboard=false"], os.path.join(work, "train_crnn.log"))
    return {"chars": (_best(compact), chars), "lines": (_best(crnn), lines)}


def _best(workdir: str) -> str:
    for name in ("best.keras", "final.keras"):
        if os.path.exists(os.path.join(workdir, name)):
            return os.path.join(workdir, name)
    raise FileNotFoundError(f"no best.keras or final.keras in {workdir}")


def bench_model(model_path: str, data_dir: str, out: str, args, eval_examples: int) -> dict:
    import keras

    from trainers.serving import evaluation, export, inference
    config = export.ExportConfig(
        formats=args.formats, eval_examples=eval_examples,
        calibration_examples=args.calibration_examples, latency_runs=args.latency_runs,
        throughput_batch=32, threads=args.threads, line_width=args.line_width)
    report = export.export(model_path, data_dir, out, config)
    model = keras.models.load_model(model_path, compile=False)
    policies = {layer.dtype_policy.name for layer in model.layers}
    report["keras"]["precision"] = ",".join(sorted(policies))
    if any(p.startswith("mixed") for p in policies):
        # The same weights computing in float32: the baseline of the INT8 goal.
        runner = inference.KerasRunner(export.float32_clone(model))
        rep = evaluation.evaluate(runner, data_dir, report["eval"]["split"],
                                  max_examples=eval_examples, progress=False,
                                  keep_predictions=True)
        rep.pop("_predictions")
        metric = report["eval"]["metric"]
        entry = {"status": "ok", "precision": "float32",
                 "size_bytes": report["keras"]["size_bytes"],
                 "metrics": {metric: rep["metrics"][metric]}}
        entry.update(export.measure_speed(runner, _sample(report, data_dir),
                                          runs=args.latency_runs, batch=32))
        report["keras_float32"] = entry
    return report


def _sample(report, data_dir):
    """The latency input export used (the first calibration image)."""
    from beam_preprocess.contract import metadata
    from trainers.serving import evaluation, inference
    info = metadata.load(data_dir)
    batch = next(evaluation.read_split(info, report["calibration"]["split"], batch_size=1))
    if info.task == "lines":
        images, _ = inference.pad_lines([batch["image"][0][:, :batch["width"][0]]],
                                        report["line_width"])
        return inference.to_model_input(images)
    return inference.to_model_input(batch["image"])


def table(report: dict) -> str:
    metric = report["eval"]["metric"]
    base = report.get("keras_float32", report["keras"])
    rows = [("keras (as trained, " + report["keras"].get("precision", "") + ")",
             report["keras"])]
    if "keras_float32" in report:
        rows.append(("keras float32", report["keras_float32"]))
    rows += list(report["formats"].items())
    name = "top-1 (%)" if metric == "top1_accuracy" else "CER (%)"
    lines = [f"| format | size (KB) | latency b1 median / p90 (ms) | throughput b32 (img/s) | "
             f"speed-up vs float32 Keras | {name} | delta vs Keras (points) | "
             f"agreement with Keras |",
             "|---|---|---|---|---|---|---|---|"]
    for label, e in rows:
        if e.get("status") != "ok":
            lines.append(f"| {label} | {e.get('status')}: {e.get('error', '')[:80]} |||||||")
            continue
        m = e.get("metrics", {}).get(metric)
        delta = e.get("delta")
        speed = (f"{base['latency_ms'] / e['latency_ms']:.2f}x"
                 if e.get("latency_ms") and base.get("latency_ms") else "")
        lines.append("| {} | {:,.0f} | {} / {} | {} | {} | {} | {} | {} |".format(
            label, e["size_bytes"] / 1024, e.get("latency_ms", ""), e.get("latency_p90_ms", ""),
            e.get("throughput_per_s", ""), speed,
            f"{100 * m:.2f}" if m is not None else "",
            f"{100 * delta:+.2f}" if delta is not None else "",
            f"{100 * e['agreement']:.1f}%" if "agreement" in e else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/hccr-bench-export",
                   help="where data and models are prepared when not given")
    p.add_argument("--chars-model")
    p.add_argument("--chars-data")
    p.add_argument("--lines-model")
    p.add_argument("--lines-data")
    p.add_argument("--out", default=None, help="export directory (default: WORK/export)")
    p.add_argument("--formats", default="default")
    p.add_argument("--eval-examples", type=int, default=1000,
                   help="test examples per format, classifier (1000)")
    p.add_argument("--lines-eval-examples", type=int, default=500,
                   help="test lines per format, CRNN (500)")
    p.add_argument("--calibration-examples", type=int, default=200)
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--line-width", type=int, default=None)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--only", choices=("chars", "lines"), default=None)
    args = p.parse_args(argv)

    from trainers.serving import export, inference
    inference.configure_tf_threads(args.threads)
    args.formats = export.parse_formats(args.formats)
    jobs = {}
    if args.chars_model and args.chars_data:
        jobs["chars"] = (args.chars_model, args.chars_data)
    if args.lines_model and args.lines_data:
        jobs["lines"] = (args.lines_model, args.lines_data)
    if not jobs:
        jobs = prepare(args.work)
    if args.only:
        jobs = {args.only: jobs[args.only]}
    out = args.out or os.path.join(args.work, "export")
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "threads": args.threads,
                           "load_average_start": os.getloadavg()}, "models": {}}
    for task, (model_path, data_dir) in jobs.items():
        print(f"== {task}: {model_path} on {data_dir}", flush=True)
        start = time.time()
        report = bench_model(model_path, data_dir, os.path.join(out, task), args,
                             args.eval_examples if task == "chars" else args.lines_eval_examples)
        report["bench_seconds"] = round(time.time() - start, 1)
        results["models"][task] = report
        print(f"\n{report['model_name']} ({report['eval']['split']} split, "
              f"{report['keras'].get('eval_examples')} examples"
              f"{', line width ' + str(report['line_width']) if report['line_width'] else ''})")
        print(table(report), flush=True)
    results["machine"]["load_average_end"] = os.getloadavg()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench_export.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False, indent=1, default=str)
    print(f"\nload average {results['machine']['load_average_start']} -> "
          f"{results['machine']['load_average_end']}; "
          f"results: {os.path.join(out, 'bench_export.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
