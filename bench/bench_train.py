"""Training throughput: `hccr-train`'s `train_and_evaluate` against a bare `model.fit` on
in-memory arrays (same model, batch, precision, optimizer and number of steps), and Horovod with
2 ranks against 1 rank.

    python bench/bench_train.py --data /tmp/casia48 --config casia-sample --epochs 3
    python bench/bench_train.py --data /tmp/casia48 --horovod      # adds 1 vs 2 ranks

Each measurement runs in its own process. Time is wall-clock from the end of the first epoch
to the end of the last (compilation excluded; every callback, checkpoint and log write of the
trainer included). The framework run trains without augmentation and without evaluation, so
both sides do the same arithmetic; a second framework run shows the cost of augmentation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)


def _epoch_clock():
    import keras

    class EpochClock(keras.callbacks.Callback):
        """Wall-clock time at the end of every epoch (after every other callback)."""

        def __init__(self):
            super().__init__()
            self.ends = []
            self.cpu = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())  # every thread of this process

    return EpochClock()


def _steady(clock, steps_per_epoch: int, global_batch: int) -> dict:
    seconds = clock.ends[-1] - clock.ends[0]
    cpu_seconds = clock.cpu[-1] - clock.cpu[0]
    steps = steps_per_epoch * (len(clock.ends) - 1)
    return {"images_per_second": steps * global_batch / seconds, "steps": steps,
            "seconds": seconds, "cpu_seconds": cpu_seconds,
            "images_per_cpu_second": steps * global_batch / cpu_seconds}


def run_framework(args) -> dict:
    from trainers.training import configs, train
    overrides = [f"epochs={args.epochs}", "eval_split=", "verbose=0", *args.set]
    if not args.augment:
        overrides.append("augment=false")
    config = configs.override(configs.get_config(args.config), overrides)
    clock = _epoch_clock()
    workdir = tempfile.mkdtemp(prefix="bench_train_")
    metrics = train.train_and_evaluate(config, workdir, args.data, extra_callbacks=[clock])
    result = _steady(clock, metrics["steps_per_epoch"], metrics["global_batch_size"])
    result.update(strategy=metrics["strategy"], num_replicas=metrics["num_replicas"],
                  global_batch_size=metrics["global_batch_size"],
                  precision=metrics["precision"], parameters=metrics["parameters"],
                  is_chief=os.environ.get("HOROVOD_RANK", "0") == "0")
    return result


def run_bare(args) -> dict:
    """The same model and step count through `model.fit` on numpy arrays."""
    import keras
    import numpy as np
    import tensorflow as tf

    from trainers.training import configs, input_pipeline, precision, strategy, train
    config = configs.override(configs.get_config(args.config),
                              [f"epochs={args.epochs}", "augment=false", *args.set])
    policy = precision.apply(config.precision)
    keras.utils.set_random_seed(config.seed)
    source = input_pipeline.open_preprocessed(args.data)
    batch = config.per_replica_batch_size
    images, labels = [], []
    for x, y in input_pipeline.make_dataset(source, config.train_split, batch_size=1024,
                                            training=False):
        images.append(x.numpy())
        labels.append(y.numpy())
    x = np.concatenate(images)
    y = np.concatenate(labels)
    steps = config.steps_per_epoch or len(y) // batch
    x, y = x[:steps * batch], y[:steps * batch]
    model = train.create_model(config, source)
    one_device = strategy.Distribution("one_device", tf.distribute.get_strategy())
    optimizer = train.create_optimizer(config, one_device, policy,
                                       total_steps=steps * config.epochs,
                                       warmup_steps=int(config.warmup_epochs * steps))
    train.compile_model(model, optimizer, config, source, one_device)  # same loss, metrics
    clock = _epoch_clock()
    model.fit(x, y, batch_size=batch, epochs=config.epochs, shuffle=True, verbose=0,
              callbacks=[clock])
    result = _steady(clock, steps, batch)
    result.update(strategy="bare model.fit", num_replicas=1, global_batch_size=batch,
                  precision=policy, parameters=model.count_params(),
                  image_shape=list(source.image_shape), tf_version=tf.__version__)
    return result


def _child(args, mode: str, launcher: list | None = None) -> dict:
    out = tempfile.mktemp(suffix=".json")
    argv = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--data", args.data,
            "--config", args.config, "--epochs", str(args.epochs), "--out", out]
    argv += sum((["--set", s] for s in args.set), [])
    if args.augment:
        argv.append("--augment")
    if launcher:
        argv = launcher + argv
    subprocess.run(argv, check=True, cwd=REPO,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                   stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="preprocessed chars directory")
    parser.add_argument("--config", default="casia-sample")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--augment", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--horovod", action="store_true", help="also 1 vs 2 Horovod ranks")
    parser.add_argument("--repeat", type=int, default=2,
                        help="alternating runs of bare and framework (best of)")
    parser.add_argument("--mode", choices=("framework", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write all results here")
    args = parser.parse_args(argv)

    if args.mode:  # a child process: one measurement
        result = run_framework(args) if args.mode == "framework" else run_bare(args)
        if args.out and result.get("is_chief", True):
            with open(args.out, "w") as f:
                json.dump(result, f)
        return 0

    load_before = os.getloadavg()[0]
    runs: dict = {"bare": [], "framework": []}
    for _ in range(args.repeat):  # alternate, so a change in the machine's load hits both
        runs["bare"].append(_child(args, "bare"))
        runs["framework"].append(_child(args, "framework"))
    results = {name: max(r, key=lambda x: x["images_per_second"]) for name, r in runs.items()}
    results["all_runs"] = runs
    args.augment = True
    results["framework_augment"] = _child(args, "framework")
    args.augment = False
    if args.horovod:
        horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
        for ranks in (1, 2):  # the same per-replica batch: 2 ranks double the global batch
            launcher = [horovodrun, "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo"]
            saved = list(args.set)
            args.set = saved + ["strategy=horovod"]
            results[f"horovod_{ranks}"] = _child(args, "framework", launcher)
            args.set = saved
    results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    bare = results["bare"]
    print("| run | replicas | global batch | precision | images/s (wall) | vs bare "
          "| images per CPU-second | vs bare |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if name == "all_runs" or not isinstance(r, dict):
            continue
        print(f"| {name} | {r['num_replicas']} | {r['global_batch_size']} | {r['precision']} "
              f"| {r['images_per_second']:,.0f} "
              f"| {r['images_per_second'] / bare['images_per_second'] - 1:+.1%} "
              f"| {r['images_per_cpu_second']:,.0f} "
              f"| {r['images_per_cpu_second'] / bare['images_per_cpu_second'] - 1:+.1%} |")
    print("all runs (images/s):", {k: [round(x["images_per_second"]) for x in v]
                                   for k, v in runs.items()})
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
