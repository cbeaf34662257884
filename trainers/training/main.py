"""`hccr-train`: flags and config, then one call to `trainers.training.train.train_and_evaluate`.

    hccr-train --config demo --data data/chars --workdir runs/demo
    hccr-train --config smoke --data data/chars --workdir /tmp/smoke --set epochs=1 \\
        --set precision=float32 --strategy mirrored
    horovodrun -np 2 -H localhost:2 --gloo hccr-train --config demo --strategy horovod ...

`--set key=value` overrides any config field (see trainers/training/configs.py); `--strategy` and
`--precision` are shorthands for `--set strategy=...` / `--set precision=...`. Running the same
command again resumes from the work directory's last checkpoint; it refuses when the data or
the model changed since (naming both values), and `--restart` starts over instead.

Exit status: 0 done; 2 a user error, in one line (an invalid config value, a missing or empty
split, a checkpoint of other data; nothing is trained or written); 3 the loss became NaN;
75 stopped by a signal (SLURM's USR1 or SIGTERM): during training after a checkpoint, before
or after training at once (the last checkpoint stays): rerun to resume;
70 a bug (traceback). `--debug` or HCCR_DEBUG=1 prints the traceback of user errors too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from beam_preprocess import cli_errors
from trainers.training import configs
from trainers.training.stop_signals import (
    PREEMPTED_EXIT,
    StoppedOutsideTraining,
    stop_signals_end_the_run,
)

EPILOG = """examples:
  hccr-train --config demo --data data/chars --workdir runs/demo
      the demo's classifier (hccr-demo's data): 15 epochs, well under two minutes on 2 cores
  hccr-train --config casia-sample --data data/casia --workdir runs/casia
      the real CASIA sample (README, "Running on real CASIA-HWDB")
  hccr-train --config smoke --data data/chars --workdir runs/x --set epochs=1 --restart
      override fields with --set; --restart discards the workdir's checkpoints
  horovodrun -np 2 -H localhost:2 --gloo hccr-train --config smoke --data data/chars \\
      --workdir runs/h --strategy horovod
  hccr-train --config mnist --data digits --workdir runs/lenet     (the seed's LeNet)
  hccr-train --config casia-sample --data data/casia --workdir runs/ft --init-from runs/pre \\
      --set ema_momentum=0.999
      start from runs/pre/best.keras (head matched by character); average the weights (EMA)

outputs in --workdir: best.keras, final.keras, config.json, metrics.json, history.csv,
curves.png, tensorboard/, checkpoints/ (a rerun of the same command resumes from them).

""" + textwrap.fill("presets: " + ", ".join(sorted(configs.PRESETS)) + " (each preset's "
                    "docstring in trainers/training/configs.py gives its launch "
                    "command).", 92) + """

exit status: 0 done, 2 user error (one line; nothing trained), 3 NaN loss, 75 stopped by a
signal (SIGUSR1/SIGTERM; after a checkpoint when it came during training; rerun resumes), 70 bug
(traceback); --debug or HCCR_DEBUG=1 shows every traceback."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hccr-train", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument("--init-from", metavar="RUN_OR_MODEL",
                        help="shorthand for --set init_from=...: start from a trained model (a "
                             "training workdir or a .keras file with charset.txt beside it); "
                             "shared characters keep their head weights, new ones start fresh")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config as JSON and exit")
    parser.add_argument("--restart", action="store_true",
                        help="start over: delete the workdir's checkpoints instead of resuming "
                             "from them (needed when the data or the model changed)")
    return parser.parse_args(argv)


def effective_config(args: argparse.Namespace) -> configs.Config:
    overrides = list(args.overrides)
    if args.strategy:
        overrides.append(f"strategy={args.strategy}")
    if args.precision:
        overrides.append(f"precision={args.precision}")
    if args.init_from:
        overrides.append(f"init_from={args.init_from}")
    return configs.override(configs.get_config(args.config), overrides)


@cli_errors.entry_point("hccr-train")
def main(argv=None) -> int:
    args = parse_args(argv)
    config = effective_config(args)  # an invalid value: one line, exit 2, nothing runs
    if args.print_config:
        print(config.to_json())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines off
    try:
        with stop_signals_end_the_run():
            from trainers.training import preemption, train
            try:
                metrics = train.train_and_evaluate(config, args.workdir, args.data,
                                                   restart=args.restart)
            except FloatingPointError as e:
                cli_errors.show_traceback(e)
                print(f"hccr-train: error: {e}", file=sys.stderr, flush=True)
                return 3
            except preemption.Preempted as e:
                print(f"hccr-train: {e}", file=sys.stderr, flush=True)
                return preemption.PREEMPTED_EXIT
            print(json.dumps({k: v for k, v in metrics.items() if k != "epoch_seconds"},
                             sort_keys=True), flush=True)
    except StoppedOutsideTraining as e:
        print(f"hccr-train: {e}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT
    if "://" in args.data or "://" in args.workdir:
        # tensorflow-io's S3 filesystem aborts at interpreter exit (tensorflow/io#2039):
        # everything is flushed, so leave without running the exit handlers.
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
