"""What synchronized BatchNorm costs: MirroredStrategy over 2 logical CPU devices, the `demo`
preset's BatchNorm ResNet, `sync_batchnorm` on (the default) against off, alternating runs.

    python bench/bench_sync_batchnorm.py                 # writes its own tiny data set
    python bench/bench_sync_batchnorm.py --data DIR --repeat 3

Each run is `bench/bench_train.py`'s framework measurement in its own process: steady-state
images/s over all epochs but the first (compilation excluded), no augmentation, no
evaluation. Synchronized BatchNorm adds one all-reduce of every BatchNorm layer's batch
statistics per step; without it the replicas' moving statistics drift apart.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="preprocessed chars directory (default: a synthetic "
                                       "one, 20 classes, 32x32, 4096 training images)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    import bench_train

    data = args.data
    if data is None:
        from tests import tiny_data
        data = tiny_data.write_chars(tempfile.mkdtemp(prefix="bench_syncbn_"), num_classes=20,
                                     image_size=32, splits={"train": 4096}, num_shards=4)
    load_before = os.getloadavg()[0]
    runs: dict = {"true": [], "false": []}
    for _ in range(args.repeat):
        for sync in runs:  # alternate, so a change in the machine's load hits both
            child = argparse.Namespace(
                data=data, config=args.config, epochs=args.epochs, augment=False,
                set=["strategy=mirrored", "num_cpu_devices=2", "precision=float32",
                     f"steps_per_epoch={args.steps}", f"sync_batchnorm={sync}",
                     "tensorboard=false", "cache=true"])
            runs[sync].append(bench_train._child(child, "framework"))
    best = {sync: max(r["images_per_second"] for r in results)
            for sync, results in runs.items()}
    first = runs["true"][0]
    print(f"| sync_batchnorm | replicas | global batch | images/s (best of {args.repeat}) |")
    print("|---|---|---|---|")
    for sync in ("false", "true"):
        print(f"| {sync} | {first['num_replicas']} | {first['global_batch_size']} "
              f"| {best[sync]:,.0f} |")
    print(f"cost of synchronized BatchNorm: {best['true'] / best['false'] - 1:+.1%}")
    print("all runs (images/s):", json.dumps({k: [round(r["images_per_second"], 1)
                                                  for r in v] for k, v in runs.items()}))
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
