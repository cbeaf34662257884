"""The end-to-end demo (the README's first command): the same commands a user would type.

Each stage prints its command line, runs it, and records how long it took; a summary table
closes the run. `--size tiny` is what CI runs; `--size small` (default) is the README demo.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

SIZES = {
    # classes, writers (GNT files), DGRL pages per writer
    "tiny": dict(classes=20, writers=6, pages=1),
    "small": dict(classes=100, writers=10, pages=2),
}


@dataclasses.dataclass
class Stage:
    name: str
    argv: list
    seconds: float = 0.0


def _bin(name: str) -> str:
    """A console script of this environment (next to the running interpreter)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def run_stage(stage: Stage, log) -> subprocess.CompletedProcess:
    print(f"\n$ {shlex.join(stage.argv)}", file=log, flush=True)
    start = time.monotonic()
    proc = subprocess.run(stage.argv, stdout=subprocess.PIPE, stderr=None, text=True)
    stage.seconds = time.monotonic() - start
    if proc.returncode != 0:
        print(proc.stdout, file=log)
        raise SystemExit(f"hccr-demo: stage {stage.name!r} failed with exit status "
                         f"{proc.returncode}: {shlex.join(stage.argv)}")
    return proc


def run_demo(workdir: str, size: str = "small", seed: int = 0, log=sys.stdout) -> dict:
    """Runs every stage of the demo into `workdir` and returns the summary."""
    cfg = SIZES[size]
    raw = os.path.join(workdir, "raw")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    summary: dict = {"workdir": workdir, "size": size, "stages": []}

    synth = Stage("synthesize", [_bin("hccr-synth"), "--out", raw, "--writers",
                                 str(cfg["writers"]), "--classes", str(cfg["classes"]),
                                 "--pages", str(cfg["pages"]), "--seed", str(seed)])
    run_stage(synth, log)
    inspect = Stage("inspect", [_bin("hccr-inspect"), "--no-counts", raw])
    facts = json.loads(run_stage(inspect, log).stdout)
    summary["dataset"] = {"samples": facts["gnt"]["samples"], "classes": facts["gnt"]["classes"],
                          "lines": facts.get("dgrl", {}).get("lines", 0)}
    print(f"  {facts['gnt']['samples']} character samples of {facts['gnt']['classes']} classes, "
          f"{summary['dataset']['lines']} text lines", file=log)
    summary["stages"] = [dataclasses.asdict(s) | {"argv": shlex.join(s.argv)}
                         for s in (synth, inspect)]
    return summary


def print_summary(summary: dict, log=sys.stdout) -> None:
    print("\n=== hccr demo summary ===", file=log)
    width = max(len(s["name"]) for s in summary["stages"])
    for s in summary["stages"]:
        print(f"  {s['name']:<{width}}  {s['seconds']:7.1f} s", file=log)
    for key, value in summary.get("results", {}).items():
        print(f"  {key}: {value}", file=log)
    print(f"  files under: {summary['workdir']}", file=log)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="hccr-demo",
        description="Run the whole pipeline on a synthetic dataset rendered from the installed "
                    "CJK fonts, printing every command it runs.")
    parser.add_argument("--workdir", default="demo_output", help="output directory (replaced)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small",
                        help="dataset and training size: tiny (CI) or small (default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = run_demo(args.workdir, args.size, args.seed)
    print_summary(summary)
    with open(os.path.join(args.workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
