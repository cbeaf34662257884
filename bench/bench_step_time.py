"""Training step time of a preset's model on this CPU: float32 against bfloat16 and XLA.

How long a fixed-budget recipe takes (`casia-sample`: 6,692 steps) depends on the CPU drawn:
`precision=auto` trains in mixed_bfloat16 only where the CPU computes bfloat16 natively
(AVX512-BF16 or AMX), in float32 elsewhere. This measures the model's training step alone
(forward, loss, backward, Adam update; random in-memory images, no input pipeline, no
augmentation) for each variant, in its own process, against the first variant as the baseline,
and estimates the preset's training time from it.

    python bench/bench_step_time.py                          # casia-sample: float32, bf16, XLA
    python bench/bench_step_time.py --variant "batch 64: precision=float32" \\
        --variant "batch 128: precision=float32; per_replica_batch_size=128"

Each variant is `LABEL: KEY=VALUE; KEY=VALUE` (config overrides as `hccr-train --set` takes
them; `model_overrides=` replaces the preset's whole dict); the first one is the baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VARIANTS = ("float32: precision=float32", "mixed_bfloat16: precision=mixed_bfloat16",
                    "float32 + XLA: precision=float32; jit_compile=true")


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, sep, assignments = text.partition(":")
    if not sep:
        raise SystemExit(f"bench_step_time: a variant is 'LABEL: KEY=VALUE; ...'. "
                         f"Received: {text!r}")
    return label.strip(), [a.strip() for a in assignments.split(";") if a.strip()]


def measure(config_name: str, overrides: list[str], image_size: int, num_classes: int,
            warmup: int, steps: int) -> dict:
    """Seconds per training step of the config's model, after `warmup` steps."""
    import keras
    import tensorflow as tf

    import models
    from trainers.training import configs, precision, train
    config = configs.override(configs.get_config(config_name), overrides)
    policy = precision.apply(config.precision)
    batch = config.per_replica_batch_size
    model = models.build_model(config.model, num_classes=num_classes,
                               input_shape=(image_size, image_size, 1),
                               **train.model_arguments(config))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=bool(config.jit_compile))
    images = tf.random.uniform((batch * 8, image_size, image_size, 1), seed=0)
    labels = tf.random.uniform((batch * 8,), 0, num_classes, tf.int32, seed=0)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache().repeat()
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)
    step_ends = []

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step_ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[StepClock()])
    seconds = (time.perf_counter() - start) / steps
    # A shared host throttles in bursts: the median step and the spread say more than the mean.
    durations = [b - a for a, b in zip([start] + step_ends[:-1], step_ends)]
    deciles = statistics.quantiles(durations, n=10)
    budget = config.epochs * config.steps_per_epoch if config.steps_per_epoch else None
    return {"policy": policy, "jit_compile": bool(config.jit_compile), "batch": batch,
            "seconds_per_step": seconds, "median_seconds_per_step": statistics.median(durations),
            "p10_seconds_per_step": deciles[0], "p90_seconds_per_step": deciles[-1],
            "budget_steps": budget,
            "budget_minutes": budget * seconds / 60 if budget else None}


def cpu_description() -> str:
    from bench_outside_writers import cpu_model

    from trainers.training import precision
    return (f"{os.cpu_count()} x {cpu_model()}, native bfloat16: "
            f"{'yes' if precision.cpu_has_bfloat16() else 'no'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="casia-sample")
    parser.add_argument("--variant", action="append", default=[],
                        help="'LABEL: KEY=VALUE; ...' (repeatable; the first is the baseline; "
                             "default: float32, mixed_bfloat16, float32 + XLA)")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.config, json.loads(args.child), args.image_size,
                                 args.num_classes, args.warmup, args.steps)))
        return 0
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    print(f"# {args.config}, {args.image_size}x{args.image_size}, {args.num_classes} classes; "
          f"{cpu_description()}; {args.steps} steps after {args.warmup}", flush=True)
    rows = []
    for label, overrides in variants:
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--config", args.config,
             "--image-size", str(args.image_size), "--num-classes", str(args.num_classes),
             "--warmup", str(args.warmup), "--steps", str(args.steps),
             "--child", json.dumps(overrides)], capture_output=True, text=True, check=False)
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            print(f"bench_step_time: variant {label!r} failed (exit {child.returncode})",
                  file=sys.stderr)
            return 1
        rows.append((label, json.loads(child.stdout.strip().splitlines()[-1])))
    base = rows[0][1]["seconds_per_step"]
    print("\n| variant | policy | XLA | ms/step (mean) | median (p10-p90) | vs baseline "
          "(mean) | est. budget (min) |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows:
        minutes = f"{r['budget_minutes']:.1f}" if r["budget_minutes"] else "-"
        print(f"| {label} | {r['policy']} | {'on' if r['jit_compile'] else 'off'} | "
              f"{r['seconds_per_step'] * 1000:.0f} | {r['median_seconds_per_step'] * 1000:.0f} "
              f"({r['p10_seconds_per_step'] * 1000:.0f}-{r['p90_seconds_per_step'] * 1000:.0f}) "
              f"| {r['seconds_per_step'] / base:.2f}x | {minutes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
