"""Forward and training-step throughput and peak memory of every model preset, on whichever
Keras backend is present (JAX, PyTorch or TensorFlow), in float32, mixed_bfloat16 and
mixed_float16, on synthetic batches: no dataset, no TensorFlow, no project install.

    KERAS_BACKEND=jax python bench/bench_models_gpu.py --out gpu_bench.md     # a GPU machine
    KERAS_BACKEND=tensorflow .venv/bin/python bench/bench_models_gpu.py --quick   # CPU, seconds

Self-contained: it needs this file and the project's `models/` package beside it (imported by
path; `models/` uses only `keras` and `numpy`), plus `keras` and one backend. docs/gpu_benchmark.md
says how to carry it to a GPU machine and what to compare the figures with.

What one row measures, each in a fresh process (so peak memory and the dtype policy belong to
that row alone):
- the model is built from `models.registry` under the precision's dtype policy and compiled
  with Adam (Keras adds its loss-scale optimizer under mixed_float16); classifiers train with
  sparse cross-entropy, CRNNs with CTC (`models.ctc`) on random labels;
- one synthetic batch, resident on the device, so the figures are the model's and not an input
  pipeline's;
- forward: `predict_on_batch` of the model followed by an argmax over the classes (what
  inference returns; it keeps the device-to-host copy small); training step:
  `train_on_batch` (forward, loss, backward, optimizer update). Each is timed over `--steps`
  calls after `--warmup` calls (compilation happens in the warm-up; its time is reported);
  every call returns a value to the host, so the timing includes one synchronisation per step;
- peak memory: on a GPU, the backend's allocator peak (JAX `memory_stats()["peak_bytes_in_use"]`,
  `torch.cuda.max_memory_allocated()`, TensorFlow `get_memory_info("GPU:0")["peak"]`); on a CPU,
  the process's maximum resident set size (it includes the Python and backend runtime). The
  column `memory` says which;
- model TFLOP/s: training images/s x 3 x the analytic forward FLOPs (`models.complexity`; the
  backward pass is counted as twice the forward), to compare models of different sizes.

Prints a Markdown table (command line, backend, device and versions above it) and writes it to
`--out` if given. Exits 1 if any row failed (the row says why).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
BACKENDS = ("jax", "torch", "tensorflow")  # tried in this order when KERAS_BACKEND is unset
QUICK = {"models": ["hccr_resnet_tiny", "crnn_tiny"], "steps": 2, "warmup": 1, "batch_size": 8,
         "line_batch_size": 4, "num_classes": 100, "image_size": 32, "line_height": 32,
         "line_width": 128, "jit_compile": "auto"}
FULL = {"models": None, "steps": 20, "warmup": 3, "batch_size": 256, "line_batch_size": 64,
        "num_classes": 3755, "image_size": 64, "line_height": 64, "line_width": 512,
        "jit_compile": "auto"}
# Characters per synthetic text line: CTC needs at least one frame per character.
LINE_LABEL_LENGTH = 12


# === One measurement (runs in its own process) ===


def _import_models():
    sys.path.insert(0, REPO)
    import models
    from models import complexity
    return models, complexity


def peak_memory() -> tuple[int, str]:
    """Peak memory in bytes so far, and what was measured."""
    import keras
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
        if stats and "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"]), f"jax peak_bytes_in_use ({device.platform})"
    elif backend == "torch":
        import torch
        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    elif backend == "tensorflow":
        import tensorflow as tf
        if tf.config.list_physical_devices("GPU"):
            return (int(tf.config.experimental.get_memory_info("GPU:0")["peak"]),
                    "tf get_memory_info peak (GPU:0)")
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS (CPU)"


def device_description() -> str:
    """The accelerator the backend computes on, or the CPU model."""
    import keras
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{len(jax.devices())} x {device.device_kind} ({device.platform})"
    elif backend == "torch":
        import torch
        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} (cuda)"
    elif backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
            return f"{len(gpus)} x {name} (gpu)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return f"CPU: {cpu}, {os.cpu_count()} cores"


def backend_versions() -> str:
    import keras
    backend = keras.backend.backend()
    module = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}[backend]
    version = __import__(module).__version__
    return f"keras {keras.__version__}, {module} {version}"


def _ctc_loss(num_time_steps):
    from keras import ops

    def ctc_train_loss(y_true, y_pred):
        from models import ctc
        labels = ops.cast(y_true, "int32")
        label_length = ops.sum(ops.cast(ops.not_equal(labels, 0), "int32"), axis=-1)
        logit_length = ops.full_like(label_length, num_time_steps)
        return ctc.ctc_loss(labels, y_pred, label_length, logit_length)

    return ctc_train_loss


def _synthetic_batch(sequence: bool, batch: int, input_shape, num_classes: int, seed: int):
    import numpy as np
    rng = np.random.default_rng(seed)
    images = rng.random((batch, *input_shape), dtype=np.float32)
    if sequence:
        labels = rng.integers(1, num_classes + 1, size=(batch, LINE_LABEL_LENGTH))
    else:
        labels = rng.integers(0, num_classes, size=(batch,))
    return images, labels.astype("int32")


def _timed(call, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        call()
    return time.perf_counter() - start


def measure(name: str, precision: str, settings: dict) -> dict:
    """Builds one preset under one precision and times its forward and training steps.

    Args:
      name: a preset of `models.available_models()`.
      precision: one of PRECISIONS (a Keras dtype policy name).
      settings: steps, warmup, batch sizes, classes and input sizes (see FULL).

    Returns:
      One table row as a dict: throughputs in images/s, compile seconds, peak bytes and the
      memory source, parameters and forward FLOPs per image.
    """
    import keras
    from keras import layers, ops
    models, complexity = _import_models()
    device = device_description()
    if settings.get("require_gpu") and device.startswith("CPU"):
        raise RuntimeError(f"--require-gpu: the {keras.backend.backend()} backend sees no GPU "
                           f"({device}); check the backend's CUDA install")
    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    sequence = models.is_sequence_model(name)
    if sequence:
        num_classes = settings["num_classes"] + 100  # level-1 set + punctuation, as in lines
        input_shape = (settings["line_height"], settings["line_width"], 1)
        batch = settings["line_batch_size"]
    else:
        num_classes = settings["num_classes"]
        input_shape = (settings["image_size"], settings["image_size"], 1)
        batch = settings["batch_size"]
    model = models.build_model(name, num_classes=num_classes, input_shape=input_shape)
    flops = complexity.model_flops(model)
    if sequence:
        time_steps = models.crnn_time_steps(settings["line_width"])
        if time_steps < 2 * LINE_LABEL_LENGTH:
            raise ValueError(f"--line-width {settings['line_width']} gives {time_steps} CTC "
                             f"frames, too few for {LINE_LABEL_LENGTH}-character lines")
        loss = _ctc_loss(time_steps)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # TensorFlow's CTC kernel has no XLA implementation; every other case compiles unless
    # --jit-compile off (XLA compilation costs tens of seconds per model on a small CPU).
    jit = settings["jit_compile"] == "auto" and not (
        sequence and keras.backend.backend() == "tensorflow")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss,
                  jit_compile="auto" if jit else False)
    predictor = keras.Model(model.inputs, layers.Lambda(
        lambda logits: ops.argmax(logits, axis=-1), name="argmax")(model.outputs[0]))
    predictor.compile(jit_compile="auto" if jit else False)

    images, labels = _synthetic_batch(sequence, batch, input_shape, num_classes, seed=0)
    images, labels = ops.convert_to_tensor(images), ops.convert_to_tensor(labels)

    def forward():
        return predictor.predict_on_batch(images)

    def train():
        return model.train_on_batch(images, labels)

    row = {"model": name, "precision": precision, "batch": batch,
           "input": "x".join(str(d) for d in input_shape[:2]), "sequence": sequence,
           "params": model.count_params(), "flops": flops, "device": device,
           "versions": backend_versions()}
    row["forward_compile_s"] = _timed(forward, settings["warmup"])
    forward_s = _timed(forward, settings["steps"])
    row["forward_images_per_s"] = settings["steps"] * batch / forward_s
    row["forward_peak_bytes"], row["memory"] = peak_memory()
    row["train_compile_s"] = _timed(train, settings["warmup"])
    losses = []
    train_s = _timed(lambda: losses.append(float(ops.convert_to_numpy(train()))),
                     settings["steps"])
    row["train_images_per_s"] = settings["steps"] * batch / train_s
    row["train_peak_bytes"], _ = peak_memory()
    row["last_loss"] = losses[-1]
    row["train_tflops"] = row["train_images_per_s"] * 3 * flops / 1e12
    return row


# === The driver: one process per row, then the table ===


def choose_backend() -> str:
    """KERAS_BACKEND if set, else the first installed of jax, torch, tensorflow."""
    import importlib.util
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is not None:
            return backend
    raise SystemExit("bench_models_gpu: no Keras backend installed: install jax, torch or "
                     "tensorflow (or set KERAS_BACKEND)")


def run_row(name: str, precision: str, settings: dict, env: dict, timeout: float) -> dict:
    """`measure` in a child process with environment `env`; a failure becomes a row that says
    why."""
    env = dict(env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, os.path.abspath(__file__), "--worker",
               json.dumps({"model": name, "precision": precision, "settings": settings})]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "precision": precision, "error": f"timed out after {timeout:g} s"}
    results = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode != 0 or not results:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = tail[-1] if tail else f"exit status {done.returncode}"
        return {"model": name, "precision": precision, "error": reason[:200]}
    return json.loads(results[-1][4:])


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def format_table(rows: list[dict], header_lines: list[str]) -> str:
    """The Markdown report: what ran, then one table row per (model, precision)."""
    lines = [*header_lines, "",
             "| model | precision | input | batch | params | GFLOP/img | forward img/s | "
             "train img/s | model TFLOP/s (train) | compile s (fwd/train) | peak MiB "
             "(fwd/train) | memory | last loss |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['precision']} | FAILED: "
                         f"{row['error'].replace('|', '/')} |||||||||||")
            continue
        kind = " line" if row["sequence"] else ""
        lines.append(
            f"| {row['model']} | {row['precision']} | {row['input']}{kind} | {row['batch']} | "
            f"{row['params']:,} | {row['flops'] / 1e9:.3f} | "
            f"{row['forward_images_per_s']:,.0f} | {row['train_images_per_s']:,.0f} | "
            f"{row['train_tflops']:.3g} | "
            f"{row['forward_compile_s']:.1f}/{row['train_compile_s']:.1f} | "
            f"{_mib(row['forward_peak_bytes'])}/{_mib(row['train_peak_bytes'])} | "
            f"{row['memory']} | {row['last_loss']:.3g} |")
    lines += ["", "img/s: images per second (text-line images for `line` rows). Forward = "
              "model + argmax; train = one optimizer step. Synthetic batch resident on the "
              "device; compile = the warm-up calls. Peak memory: see the `memory` column (on "
              "CPU the whole process's max RSS). Model TFLOP/s = train img/s x 3 x analytic "
              "forward FLOPs."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_models_gpu.py",
        description="Forward and training-step throughput and peak memory of the model "
                    "presets on the installed Keras backend (KERAS_BACKEND), for float32, "
                    "mixed_bfloat16 and mixed_float16, on synthetic batches.",
        epilog="Examples:\n"
               "  KERAS_BACKEND=jax python bench/bench_models_gpu.py --out gpu_bench.md\n"
               "  KERAS_BACKEND=tensorflow python bench/bench_models_gpu.py --quick\n"
               "  python bench/bench_models_gpu.py --models hccr_resnet_compact "
               "--precisions mixed_bfloat16 --batch-size 512",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="hccr_resnet_tiny and crnn_tiny, 2 steps, batch 8, 32-pixel inputs, "
                        "100 classes (a smoke test; explicit flags still win)")
    p.add_argument("--models", nargs="+", default=None,
                   help="presets to measure (default: every preset of models/registry.py)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="dtype policies (default: all three)")
    p.add_argument("--steps", type=int, help="timed calls per measurement (20; quick: 2)")
    p.add_argument("--warmup", type=int, help="untimed calls first, compilation (3; quick: 1)")
    p.add_argument("--batch-size", type=int, help="classifier batch (256; quick: 8)")
    p.add_argument("--line-batch-size", type=int, help="CRNN batch (64; quick: 4)")
    p.add_argument("--num-classes", type=int,
                   help="classifier classes (3755; quick: 100); CRNNs get 100 more")
    p.add_argument("--image-size", type=int, help="classifier input side (64; quick: 32)")
    p.add_argument("--line-height", type=int, help="CRNN input height (64; quick: 32)")
    p.add_argument("--line-width", type=int, help="CRNN input width (512; quick: 128)")
    p.add_argument("--jit-compile", choices=("auto", "off"),
                   help="'auto' (default): Keras compiles the steps (XLA on JAX and TensorFlow); "
                        "'off': no XLA (faster start on CPU, slower steps)")
    p.add_argument("--require-gpu", action="store_true",
                   help="fail every row that would run on the CPU (a GPU run that silently "
                        "fell back to the CPU is worse than none)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds allowed per (model, precision) process (1800)")
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def resolve_settings(args) -> dict:
    """FULL or QUICK defaults, with every flag given on the command line taking precedence."""
    settings = dict(QUICK if args.quick else FULL, require_gpu=args.require_gpu)
    for key in settings:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    for key in ("steps", "warmup", "batch_size", "line_batch_size", "num_classes",
                "image_size", "line_height", "line_width"):
        if settings[key] < 1:
            raise SystemExit(f"bench_models_gpu: --{key.replace('_', '-')} must be at least "
                             f"1. Received: {settings[key]}")
    return settings


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        row = measure(job["model"], job["precision"], job["settings"])
        print("ROW " + json.dumps(row), flush=True)
        return 0
    settings = resolve_settings(args)
    backend = choose_backend()
    child_env = dict(os.environ, KERAS_BACKEND=backend)
    os.environ["KERAS_BACKEND"] = backend
    # The driver only lists presets: hidden from the GPUs, it cannot take memory (JAX
    # preallocates most of a GPU in the first process that touches it) from the rows.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    models, _ = _import_models()
    names = settings.pop("models") or models.available_models()
    unknown = sorted(set(names) - set(models.available_models()))
    if unknown:
        raise SystemExit(f"bench_models_gpu: unknown presets {unknown}; choose from "
                         f"{models.available_models()}")
    command = " ".join(shlex.quote(a) for a in [
        f"KERAS_BACKEND={backend}", "python", os.path.relpath(__file__, REPO),
        *(sys.argv[1:] if argv is None else argv)])
    rows = []
    for name in names:
        for precision in args.precisions:
            print(f"[bench] {name} {precision} ...", file=sys.stderr, flush=True)
            rows.append(run_row(name, precision, settings, child_env, args.timeout))
    measured = [r for r in rows if "error" not in r]
    header = [f"Command: `{command}`",
              f"Backend: {backend}; "
              f"{measured[0]['versions'] if measured else 'no row ran'}; "
              f"Python {platform.python_version()}",
              f"Device: {measured[0]['device'] if measured else 'unknown (no row ran)'}",
              f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; steps "
              f"{settings['steps']} after {settings['warmup']} warm-up; classifiers "
              f"{settings['image_size']}x{settings['image_size']}, {settings['num_classes']} "
              f"classes, batch {settings['batch_size']}; CRNNs {settings['line_height']}x"
              f"{settings['line_width']}, {settings['num_classes'] + 100} classes, batch "
              f"{settings['line_batch_size']}; jit_compile {settings['jit_compile']}"]
    table = format_table(rows, header)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": command, "settings": settings, "rows": rows}, f, indent=1)
    failed = [f"{r['model']}/{r['precision']}" for r in rows if "error" in r]
    if failed:
        print(f"bench_models_gpu: {len(failed)} measurement(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
