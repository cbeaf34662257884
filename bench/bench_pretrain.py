"""Pretraining on synthetic writers, then fine-tuning on real ones, against training from scratch.

Measured on writers outside the sample: `casia-hwdb-outside/outside-writers.gnt` is the
validation split of every run (model selection and the reported figure) and is never trained on.
One run of this script:

1. preprocesses the real files (train = `train-000[0-3].gnt`; the charset is the data's);
2. renders `--pretrain-writers` synthetic writers with `hccr-synth`, either of the real charset
   (`--pretrain-charset data`) or of all 3,755 GB2312 level-1 classes (`gb2312-1`), and
   preprocesses them as a training split of their own (same validation split);
3. pretrains `casia-sample` on them for `--pretrain-steps` steps;
4. fine-tunes with `hccr-train --init-from` (the head matched by character) for
   `--finetune-steps` steps on the real files;
5. reports top-1 of the fine-tuned `final.keras` over every outside image, and the wall time of
   every stage.

Compare with `bench_outside_writers.py --synth-writers 0` at the same total number of steps
(pretraining steps + fine-tuning steps; the models and batch sizes are the same, so equal steps
is equal training time on the same machine, up to the larger head at 3,755 classes).

    python bench/bench_pretrain.py --pretrain-writers 400 --pretrain-steps 800 \\
        --finetune-steps 1590 --seed 0
    python bench/bench_pretrain.py --pretrain-charset gb2312-1 --pretrain-writers 4 \\
        --pretrain-steps 800 --finetune-steps 1590
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_casia import BIN, REPO, _run, top1  # noqa: E402

SHARED = os.path.join(REPO, "..", "shared", "data")


def _steps(total: int, steps_per_epoch: int = 239) -> list[str]:
    """`--set` flags for `total` steps as whole epochs of at most `steps_per_epoch` steps."""
    epochs = max(1, round(total / steps_per_epoch))
    return ["--set", f"epochs={epochs}", "--set", f"steps_per_epoch={max(1, total // epochs)}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-dir", default=os.path.join(SHARED, "casia-hwdb-sample"))
    parser.add_argument("--outside", default=os.path.join(SHARED, "casia-hwdb-outside",
                                                          "outside-writers.gnt"))
    parser.add_argument("--out", default="/tmp/pretrain_bench")
    parser.add_argument("--pretrain-charset", choices=("data", "gb2312-1"), default="data",
                        help="'data': the 21 classes of the real files; 'gb2312-1': all 3,755")
    parser.add_argument("--pretrain-writers", type=int, default=400)
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--finetune-steps", type=int, default=1590)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--set", action="append", default=[],
                        help="config override for both trainings")
    args = parser.parse_args(argv)
    for path in (args.sample_dir, args.outside):
        if not os.path.exists(path):
            print(f"bench_pretrain: {path} not found (../shared/data is needed)")
            return 2
    overrides = ["--set", "verbose=2", "--set", f"seed={args.seed}",
                 *sum((["--set", s] for s in args.set), [])]
    real, synth = os.path.join(args.out, "data_real"), os.path.join(args.out, "synth_gnt")
    pre_data, pre_run = os.path.join(args.out, "data_pre"), os.path.join(args.out, "run_pre")
    fine_run = os.path.join(args.out, "run_finetune")
    times = {}
    start = time.perf_counter()
    times["preprocess_real_s"] = _run([
        os.path.join(BIN, "hccr-preprocess"),
        "--split-glob", f"train={args.sample_dir}/train-000[0-3].gnt",
        "--split-glob", f"validation={args.outside}", "--charset", "data",
        "--image-size", str(args.image_size), "--output", real, "--overwrite"])
    charset = (os.path.join(real, "charset.txt") if args.pretrain_charset == "data"
               else "gb2312-1")
    times["synthesis_s"] = _run([
        os.path.join(BIN, "hccr-synth"), "--out", synth, "--writers",
        str(args.pretrain_writers), "--charset", charset, "--seed", str(args.seed), "--quiet"])
    times["preprocess_synthetic_s"] = _run([
        os.path.join(BIN, "hccr-preprocess"),
        "--split-glob", f"train={synth}/*.gnt", "--split-glob", f"validation={args.outside}",
        "--charset", charset, "--image-size", str(args.image_size), "--output", pre_data,
        "--overwrite"])
    times["pretrain_s"] = _run([
        os.path.join(BIN, "hccr-train"), "--config", "casia-sample", "--data", pre_data,
        "--workdir", pre_run, "--restart", *overrides, *_steps(args.pretrain_steps)])
    pretrained_top1, _ = top1(os.path.join(pre_run, "final.keras"), pre_data)
    times["finetune_s"] = _run([
        os.path.join(BIN, "hccr-train"), "--config", "casia-sample", "--data", real,
        "--workdir", fine_run, "--restart", "--init-from", os.path.join(pre_run, "final.keras"),
        *overrides, *_steps(args.finetune_steps)])
    total_s = time.perf_counter() - start
    accuracy, count = top1(os.path.join(fine_run, "final.keras"), real)
    from beam_preprocess.contract import metadata
    pretrain_images = metadata.load(pre_data).num_examples("train")
    with open(os.path.join(fine_run, "metrics.json")) as f:
        metrics = json.load(f)
    result = {"pretrain_charset": args.pretrain_charset,
              "pretrain_writers": args.pretrain_writers,
              "pretrain_images": pretrain_images,
              "pretrain_steps": args.pretrain_steps, "finetune_steps": args.finetune_steps,
              "seed": args.seed, "overrides": args.set,
              "top1_outside_pretrained_only": pretrained_top1,
              "top1_outside_final_model": accuracy, "outside_images": count,
              "best_val_accuracy": metrics.get("best_val_accuracy"), **times,
              "total_seconds": total_s}
    print(json.dumps(result, indent=1))
    print(f"top-1 on outside-writers.gnt ({count} images) after pretraining "
          f"{pretrained_top1:.2%}, after fine-tuning {accuracy:.2%}, in {total_s / 60:.1f} min")
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
