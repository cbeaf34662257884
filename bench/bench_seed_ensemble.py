"""How much of the error on outside writers is the seed's: several trained models scored
image by image on one preprocessed validation split.

For each model: its top-1. Across the models: how many images every model gets wrong (the
errors no reseeding fixes), how many at least one gets wrong, and the top-1 of their
ensemble (the mean of the softmax). A large gap between the single models and the ensemble
says that the error left is variance between runs, not a shared blind spot.

    python bench/bench_seed_ensemble.py --data DATA_DIR RUN_0/final.keras RUN_1/final.keras \\
        RUN_2/final.keras [--split validation] [--out result.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_split(data_dir: str, split: str):
    """Every image and label of `split`, in file order."""
    import numpy as np

    from trainers.training import input_pipeline
    images, labels = [], []
    source = input_pipeline.open_preprocessed(data_dir)
    for x, y in input_pipeline.make_dataset(source, split, batch_size=256, training=False):
        images.append(x.numpy())
        labels.append(y.numpy())
    if not images:
        raise SystemExit(f"bench_seed_ensemble: split {split!r} of {data_dir} is empty")
    return np.concatenate(images), np.concatenate(labels)


def score(probabilities, labels) -> dict:
    """Per-model top-1, the images all / any get wrong, and the ensemble's top-1."""
    import numpy as np
    probabilities = np.stack(probabilities)
    wrong = probabilities.argmax(-1) != labels[None]
    return {
        "images": int(labels.size),
        "top1": [float(1 - w.mean()) for w in wrong],
        "wrong_in_every_model": int(wrong.all(0).sum()),
        "wrong_in_some_model": int(wrong.any(0).sum()),
        "ensemble_top1": float((probabilities.mean(0).argmax(-1) == labels).mean()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=".keras files trained on the same charset")
    parser.add_argument("--data", required=True, help="preprocessed directory")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", default="", help="also write the result here as JSON")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("give at least two models")
    import keras
    import tensorflow as tf
    images, labels = load_split(args.data, args.split)
    probabilities = []
    for path in args.models:
        model = keras.models.load_model(path, compile=False)
        if model.output_shape[-1] <= int(labels.max()):
            raise SystemExit(f"bench_seed_ensemble: {path} has {model.output_shape[-1]} classes; "
                             f"{args.data} has label {int(labels.max())}")
        probabilities.append(tf.nn.softmax(model.predict(images, batch_size=256,
                                                         verbose=0)).numpy())
    result = {"models": args.models, "data": args.data, "split": args.split,
              **score(probabilities, labels)}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
