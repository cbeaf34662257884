"""CTC beam search on one thread against every core, on a trained CRNN's real logits.

TensorFlow's beam-search kernel decodes a whole batch on one thread, so `models.ctc` splits a
batch into slices of rows decoded on threads side by side (`workers`, default: every core this
process may use). This runs the model once over a split, keeps the logits, then times the beam
search of every batch for each number of workers (best of `--repeat` runs), checks that every
variant decodes every line to the same labelling, and prints a Markdown table.

A CRNN and its lines data come from the README demo, for example:

    hccr-demo --workdir /tmp/demo
    python bench/bench_ctc_decode.py --model /tmp/demo/runs/crnn/final.keras \\
        --data /tmp/demo/data/lines [--workers 1,2] [--beam-width 10] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, REPO)


def _workers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of positive integers, not "
                                         f"{text!r}")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a CRNN (.keras or any hccr format)")
    parser.add_argument("--data", required=True, help="the preprocessed lines directory")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-size", type=int, default=64, help="hccr-eval's default (64)")
    parser.add_argument("--beam-width", type=int, default=10, help="hccr-eval's default (10)")
    parser.add_argument("--workers", type=_workers, default=None,
                        help="numbers of threads to compare (default: 1 and every core)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant; best counts")
    args = parser.parse_args(argv)

    from beam_preprocess.contract import metadata
    from models import ctc
    from trainers.serving import inference
    from trainers.serving.evaluation import read_split

    info = metadata.load(args.data)
    if info.task != "lines":
        raise SystemExit(f"bench_ctc_decode: {args.data} holds {info.task!r}, not lines")
    runner = inference.load(args.model)
    batches = []
    for batch in read_split(info, args.split, batch_size=args.batch_size):
        images = [image[:, :w] for image, w in zip(batch["image"], batch["width"])]
        batches.append(inference.recognize_lines(runner, images))
    if not batches:
        raise SystemExit(f"bench_ctc_decode: split {args.split!r} of {args.data} is empty")
    lines = sum(len(lengths) for _, lengths in batches)
    classes = batches[0][0].shape[-1]
    longest = max(logits.shape[1] for logits, _ in batches)
    variants = args.workers or sorted({1, ctc.default_decode_workers()})

    rows, reference = [], None
    for workers in variants:
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            decoded = [ids for logits, lengths in batches
                       for ids in ctc.ctc_beam_decode(logits, lengths, args.beam_width, workers)]
            best = min(best, time.perf_counter() - start)
        if reference is None:
            reference = decoded
        elif decoded != reference:
            raise SystemExit(f"bench_ctc_decode: {workers} workers decoded differently from "
                             f"{variants[0]}")
        rows.append((workers, best))

    print(f"{lines} lines of {args.split} ({len(batches)} batches of up to {args.batch_size}; "
          f"up to {longest} frames, {classes} outputs), beam width {args.beam_width}, "
          f"{ctc.default_decode_workers()} usable CPUs, best of {args.repeat}; every variant "
          f"decoded every line alike.\n")
    print("| beam-search threads (`workers`) | seconds | ms per line | speed-up |")
    print("|---:|---:|---:|---:|")
    for workers, seconds in rows:
        print(f"| {workers} | {seconds:.1f} | {1000 * seconds / lines:.1f} | "
              f"{rows[0][1] / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
