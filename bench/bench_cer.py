"""CER on a 10,000-line evaluation: the pure-Python edit distance hccr-eval used against rapidfuzz.

The lines are synthetic but shaped like a CRNN's evaluation: references of 8-24 GB2312 level-1
characters (the demo's line lengths), and predictions with per-line error rates like a
half-trained model's (a third of the lines exact, the others with 2-30 % of their characters
substituted, dropped or followed by an inserted one). Deterministic for a seed. Every variant
computes the distance of every pair; the script checks that all give the same distances, then
times the whole CER computation (best of at least `--repeat` runs).

    taskset -c 0 .venv/bin/python bench/bench_cer.py [--lines 10000] [--repeat 5] [--no-docs]

Prints a Markdown table and (unless --no-docs) writes it as the CER section of
docs/benchmarks.md, replacing that section if it is there.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, REPO)

from beam_preprocess.contract.charset import gb2312_level1  # noqa: E402

DOCS = os.path.join(REPO, "docs", "benchmarks.md")
SECTION = "## Character error rate: edit distance (`bench/bench_cer.py`)"
LINE_CHARS = (8, 24)  # hccr-preprocess' default line lengths, which the demo uses
EXACT_LINES = 1 / 3
ERROR_RATES = (0.02, 0.30)  # per character, for the lines that are not exact
# Of the errors: a substitution, a dropped character, an inserted one.
ERROR_KINDS = (("substitute", 0.6), ("drop", 0.2), ("insert", 0.2))
# Fast variants repeat until they have used this much CPU (the best of a few 5 ms runs on a
# loaded machine is noise).
MIN_CPU_S, MAX_REPEAT = 1.0, 500


def python_edit_distance(a, b) -> int:
    """The pure-Python Levenshtein distance hccr-eval used before rapidfuzz (the baseline)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def synthetic_lines(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` (reference, prediction) lines, as described in the module docstring."""
    rng = np.random.default_rng(seed)
    chars = gb2312_level1()
    kinds = [k for k, _ in ERROR_KINDS]
    kind_p = [p for _, p in ERROR_KINDS]
    references, predictions = [], []
    for _ in range(n):
        length = int(rng.integers(LINE_CHARS[0], LINE_CHARS[1] + 1))
        reference = [chars[i] for i in rng.integers(0, len(chars), length)]
        rate = 0.0 if rng.random() < EXACT_LINES else float(rng.uniform(*ERROR_RATES))
        prediction = []
        for char in reference:
            if rng.random() >= rate:
                prediction.append(char)
                continue
            kind = kinds[rng.choice(len(kinds), p=kind_p)]
            other = chars[int(rng.integers(0, len(chars)))]
            if kind == "substitute":
                prediction.append(other)
            elif kind == "insert":
                prediction += [char, other]
        references.append("".join(reference))
        predictions.append("".join(prediction))
    return references, predictions


def variants() -> dict:
    """name -> function(references, predictions) -> per-line distances."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    from trainers.serving import evaluation
    return {
        "pure Python (the former `evaluation.edit_distance`)":
            lambda refs, hyps: [python_edit_distance(r, h) for r, h in zip(refs, hyps)],
        "rapidfuzz `Levenshtein.distance`, one call per line":
            lambda refs, hyps: [Levenshtein.distance(r, h) for r, h in zip(refs, hyps)],
        "rapidfuzz `process.cpdist`, one call (workers=1)":
            lambda refs, hyps: process.cpdist(refs, hyps, scorer=Levenshtein.distance,
                                              workers=1).tolist(),
        "`evaluation.line_metrics` (CER, line accuracy) as hccr-eval runs it":
            lambda refs, hyps: evaluation.line_metrics(refs, hyps)["edit_distance"],
    }


def measure(references, predictions, repeat: int) -> list[dict]:
    """Times every variant (best of at least `repeat` runs, wall and CPU) and checks that their
    distances agree."""
    expected = None
    rows = []
    for name, fn in variants().items():
        walls, cpus = [], []
        while len(walls) < repeat or (sum(cpus) < MIN_CPU_S and len(walls) < MAX_REPEAT):
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn(references, predictions)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        if isinstance(result, list):
            if expected is None:
                expected = result
            elif result != expected:
                bad = next(i for i, (a, b) in enumerate(zip(result, expected)) if a != b)
                raise SystemExit(f"{name}: distance {result[bad]} != {expected[bad]} for line "
                                 f"{bad}: {references[bad]!r} vs {predictions[bad]!r}")
            total = sum(result)
        else:
            total = result
            if total != sum(expected):
                raise SystemExit(f"{name}: total distance {total} != {sum(expected)}")
        rows.append({"variant": name, "repeats": len(walls), "best_s": min(walls),
                     "median_s": float(np.median(walls)), "cpu_s": min(cpus),
                     "distance": total})
    return rows


def markdown(rows: list[dict], references, command: str, load: tuple, cores,
             repeat: int) -> str:
    chars = sum(len(r) for r in references)
    baseline = rows[0]["cpu_s"]
    cer = rows[0]["distance"] / chars
    lines = [
        SECTION,
        "",
        f"Command: `{command}` (core(s) {cores} of {os.cpu_count()}; each variant run at "
        f"least {repeat} times, the fast ones until they have used {MIN_CPU_S:.0f} CPU-second). "
        f"{len(references):,} synthetic lines of {LINE_CHARS[0]}-{LINE_CHARS[1]} GB2312 level-1 "
        f"characters ({chars:,} reference characters), {EXACT_LINES:.0%} of them predicted "
        f"exactly, the others with {ERROR_RATES[0]:.0%}-{ERROR_RATES[1]:.0%} of their "
        f"characters substituted, dropped or followed by an inserted one: CER "
        f"{100 * cer:.2f} %. Every variant gives the same distance for every line (checked by "
        f"the script). Load average "
        f"{load[0]:.2f} at the start and {load[1]:.2f} at the end (1 min, `os.getloadavg()`); "
        f"Python {platform.python_version()}, rapidfuzz {_rapidfuzz_version()}. The "
        f"process' CPU time measures the work; wall time also counts the other processes on "
        f"the core.",
        "",
        f"| edit distance of {len(references):,} lines | CPU, best | µs per line (CPU) "
        "| speed-up (CPU) | wall, best (median) | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['cpu_s'] * 1e3:.1f} ms | "
                     f"{r['cpu_s'] / len(references) * 1e6:.2f} | {baseline / r['cpu_s']:.0f}x | "
                     f"{r['best_s'] * 1e3:.1f} ms ({r['median_s'] * 1e3:.1f}) | {r['repeats']} |")
    lines += [
        "",
        "hccr-eval computes CER with rapidfuzz (`evaluation.line_metrics`, one "
        "`Levenshtein.distance` per line), which is why the pure-Python loop is gone; the last "
        "row is that code, sums and line accuracy included.",
    ]
    return "\n".join(lines) + "\n"


def _rapidfuzz_version() -> str:
    import rapidfuzz
    return rapidfuzz.__version__


def write_section(text: str, path: str = DOCS) -> None:
    """Replaces the CER section of docs/benchmarks.md (up to the next `## `), or appends it."""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    if SECTION in doc:
        start = doc.index(SECTION)
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + ("" if end < 0 else doc[end:])
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.lines < 1 or args.repeat < 1:
        parser.error(f"--lines and --repeat must be >= 1. Received: {args.lines}, {args.repeat}")
    load_start = os.getloadavg()[0]
    references, predictions = synthetic_lines(args.lines, args.seed)
    rows = measure(references, predictions, args.repeat)
    affinity = sorted(os.sched_getaffinity(0))
    cores = ",".join(str(c) for c in affinity)
    pinned = f"taskset -c {cores} " if len(affinity) < (os.cpu_count() or 1) else ""
    flags = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--no-docs"]
    command = " ".join([f"{pinned}.venv/bin/python bench/bench_cer.py", *flags])
    text = markdown(rows, references, command, (load_start, os.getloadavg()[0]), cores,
                    args.repeat)
    print(text)
    if not args.no_docs:
        write_section(text)
        print(f"wrote the section {SECTION!r} of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
