"""Input pipeline alone: images/s of the training pipeline (with and without augmentation) and
of the evaluation pipeline, against reading the raw records of the same shards.

    python bench/bench_input.py --data /tmp/casia48 [--batch 64] [--batches 200]
    python bench/bench_input.py            # writes a synthetic 64x64 directory first

Prints a Markdown table and, with --json, writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tensorflow as tf  # noqa: E402

from trainers.training import augment, input_pipeline


def _rate(dataset, batches: int, batch_size: int, warmup: int = 5) -> float:
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def measure(data_dir: str, batch_size: int, batches: int, split: str = "train") -> dict:
    source = input_pipeline.open_preprocessed(data_dir)
    raw = input_pipeline.read_records(source.files[split], compression=source.compression,
                                      training=True).repeat().batch(batch_size).prefetch(
                                          tf.data.AUTOTUNE)
    results = {"data": data_dir, "image_shape": list(source.image_shape),
               "batch_size": batch_size, "batches": batches,
               "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    results["raw_records"] = _rate(raw, batches, batch_size)
    cases = {
        "train_no_augment": dict(training=True, augment=None),
        "train_augment": dict(training=True, augment=augment.AugmentParams()),
        "eval": dict(training=False),
    }
    for name, kwargs in cases.items():
        dataset = input_pipeline.make_dataset(source, split, batch_size=batch_size,
                                              shuffle_buffer=4096, **kwargs)
        if not kwargs["training"]:
            dataset = dataset.repeat()
        results[name] = _rate(dataset, batches, batch_size)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="preprocessed chars directory (default: synthetic)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    data = args.data
    if not data:
        from tests import tiny_data
        data = tiny_data.write_chars(tempfile.mkdtemp(prefix="bench_input_"), num_classes=30,
                                     image_size=64, splits={"train": 4096}, num_shards=4)
    r = measure(data, args.batch, args.batches)
    print(f"| pipeline ({r['image_shape'][0]}x{r['image_shape'][1]}, batch {r['batch_size']}) "
          f"| images/s | vs raw records |")
    print("|---|---|---|")
    for name in ("raw_records", "eval", "train_no_augment", "train_augment"):
        print(f"| {name} | {r[name]:,.0f} | {r[name] / r['raw_records']:.2f}x |")
    print(f"(load average {r['load_average_1min']:.1f} on {r['cpu_count']} CPUs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
