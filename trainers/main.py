"""`hccr-train`: flags and config, then one call to `trainers.train.train_and_evaluate`.

    hccr-train --config demo --data data/chars --workdir runs/demo
    hccr-train --config smoke --data data/chars --workdir /tmp/smoke --set epochs=1 \\
        --set precision=float32 --strategy mirrored
    horovodrun -np 2 -H localhost:2 --gloo hccr-train --config demo --strategy horovod ...

`--set key=value` overrides any config field (see trainers/configs.py); `--strategy` and
`--precision` are shorthands for `--set strategy=...` / `--set precision=...`. Running the same
command again resumes from the work directory's last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from trainers import configs

EPILOG = "presets: " + ", ".join(sorted(configs.PRESETS)) + \
    " (each preset's docstring in trainers/configs.py gives its launch command)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hccr-train", epilog=EPILOG,
        description="Train a handwritten Chinese character (or text line) recognizer on a "
                    "directory written by hccr-preprocess, on one device, MirroredStrategy, "
                    "MultiWorkerMirroredStrategy or Horovod. Reruns resume from the workdir.")
    parser.add_argument("--config", required=True,
                        help="preset name or a config.json written by an earlier run")
    parser.add_argument("--data", required=True,
                        help="preprocessed directory (local, gs://, s3://, ...); for the mnist "
                             "preset a local mnist.npz or 'digits'")
    parser.add_argument("--workdir", required=True, help="output directory (resumes from it)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--strategy", choices=configs.STRATEGIES,
                        help="shorthand for --set strategy=...")
    parser.add_argument("--precision", choices=configs.PRECISIONS,
                        help="shorthand for --set precision=...")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config as JSON and exit")
    return parser.parse_args(argv)


def effective_config(args: argparse.Namespace) -> configs.Config:
    overrides = list(args.overrides)
    if args.strategy:
        overrides.append(f"strategy={args.strategy}")
    if args.precision:
        overrides.append(f"precision={args.precision}")
    return configs.override(configs.get_config(args.config), overrides)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = effective_config(args)
    except ValueError as e:
        print(f"hccr-train: error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.to_json())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines off
    from trainers import train
    try:
        metrics = train.train_and_evaluate(config, args.workdir, args.data)
    except FloatingPointError as e:
        print(f"hccr-train: error: {e}", file=sys.stderr, flush=True)
        return 3
    print(json.dumps({k: v for k, v in metrics.items() if k != "epoch_seconds"}, sort_keys=True),
          flush=True)
    if "://" in args.data or "://" in args.workdir:
        # tensorflow-io's S3 filesystem aborts at interpreter exit (tensorflow/io#2039):
        # everything is flushed, so leave without running the exit handlers.
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
