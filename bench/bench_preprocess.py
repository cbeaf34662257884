"""Benchmark of `hccr-preprocess` (task chars) against a plain single-process Python loop.

Measured in the same run, on the same files, doing the same work:

* plain:     one Python process, for each file: parse (gnt.read_gnt), normalize
             (imaging.normalize_char), encode (schema.char_example, the job's encoder:
             byte-identical to schema.reference_char_example and 5x faster), frame and write one
             TFRecord file per input file. This is the per-sample work with no framework.
* beam-1:    the Beam job on the DirectRunner, in-process (--direct_num_workers 1).
* beam-mp2:  the Beam job on the DirectRunner, --direct_running_mode multi_processing with
             --direct_num_workers 2 (worker process start-up included).

A second, instrumented pass of the plain loop splits its time into parse / normalize / encode /
write; a run of the Beam job on a single tiny file gives its fixed start-up cost. Wall time is
what a user waits for; CPU seconds (this process plus Beam's worker processes) measure the work
itself and stay meaningful when other jobs share the machine.

    .venv/bin/python bench/bench_preprocess.py      # real sample, synthetic set, 4x linked set
    .venv/bin/python bench/bench_preprocess.py --synth-writers 4 --replicate 0 --repeat 1

The synthetic set (all 3755 GB2312 level-1 classes, --synth-writers writers) is made once with
hccr-synth and cached under --work.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from beam_preprocess.contract import gnt, imaging, schema
from beam_preprocess.contract.charset import Charset  # noqa: E402
from beam_preprocess.contract.tfrecords import RecordWriter  # noqa: E402
from beam_preprocess.job import pipeline, splits

REAL_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "casia-hwdb-sample")


def plain_loop(files: list[str], out_dir: str, charset: Charset, *, size: int = 64,
               margin: int = 4, timed: bool = False) -> dict:
    """The per-sample work of the job in a plain loop; returns counts (and stage times)."""
    index = {c: i for i, c in enumerate(charset.chars)}
    stages = dict.fromkeys(("parse", "normalize", "encode", "write"), 0.0)
    clock = time.process_time  # CPU time: stage shares do not depend on other jobs' load
    written = rejected = 0
    os.makedirs(out_dir, exist_ok=True)
    for path in files:
        name = os.path.basename(path)
        with open(path, "rb") as f, open(os.path.join(out_dir, name + ".tfrecord"), "wb") as out:
            writer = RecordWriter(out)
            samples = gnt.read_gnt(f, path=path, resync=True)
            while True:
                t0 = clock() if timed else 0.0
                sample = next(samples, None)
                if timed:
                    t1 = clock()
                    stages["parse"] += t1 - t0
                if sample is None:
                    break
                if isinstance(sample, gnt.SkippedBytes) or sample.char not in index:
                    rejected += 1
                    continue
                try:
                    image = imaging.normalize_char(sample.image, size, margin)
                except imaging.EmptyImageError:
                    rejected += 1
                    continue
                if timed:
                    t2 = clock()
                    stages["normalize"] += t2 - t1
                h, w = sample.image.shape
                record = schema.char_example(image=image.tobytes(), height=size, width=size,
                                             label=index[sample.char], char=sample.char,
                                             writer=splits.writer_id(name), orig_height=h,
                                             orig_width=w, source=f"{name}:{sample.offset}")
                if timed:
                    t3 = clock()
                    stages["encode"] += t3 - t2
                writer.write(record)
                if timed:
                    stages["write"] += clock() - t3
                written += 1
            writer.close()
    return {"written": written, "rejected": rejected, "stages": stages}


def beam_job(pattern: str, out_dir: str, extra: list[str]) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        report = pipeline.run(["--input", pattern, "--output", out_dir, "--overwrite", *extra])
    if not report.ok:
        raise RuntimeError(report.summary())
    return report.metadata["counts"]


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (Beam's worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, repeat: int, setup=lambda: None):
    """Wall and CPU seconds (driver + worker processes) of `repeat` calls of `fn`."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        setup()  # not timed
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - wall0)
        cpus.append(_cpu_seconds() - cpu0)
    return walls, cpus, result


def bench_dataset(label: str, pattern: str, work: str, repeat: int) -> list[dict]:
    files = sorted(glob.glob(pattern))
    read = sum(1 for f in files for _ in gnt.read_gnt(f, resync=True))
    charset = Charset.named("gb2312-1")
    rows = []
    out = os.path.join(work, "out")
    walls, cpus, counts = timed(lambda: plain_loop(files, out + "-plain", charset), repeat,
                                setup=lambda: shutil.rmtree(out + "-plain", ignore_errors=True))
    rows.append(dict(dataset=label, mode="plain loop (1 process)", samples=read, walls=walls,
                     cpus=cpus))
    for mode, flags in (("beam DirectRunner in-process", ["--direct_num_workers", "1"]),
                        ("beam DirectRunner multi_processing x2",
                         ["--direct_num_workers", "2", "--direct_running_mode",
                          "multi_processing"])):
        walls, cpus, beam_counts = timed(
            lambda flags=flags: beam_job(pattern, out + "-beam", flags), repeat,
            setup=lambda: shutil.rmtree(out + "-beam", ignore_errors=True))
        assert beam_counts["read"] == read, (beam_counts, read)
        assert beam_counts["written"] == counts["written"], (beam_counts, counts)
        rows.append(dict(dataset=label, mode=mode, samples=read, walls=walls, cpus=cpus))
    stage = plain_loop(files, out + "-plain", charset, timed=True)["stages"]
    total = sum(stage.values())
    print(f"\n{label}: {read} samples, {len(files)} files; plain-loop stages (instrumented pass, "
          f"CPU time):")
    for name, seconds in stage.items():
        print(f"  {name:<10} {seconds / read * 1e6:7.1f} µs/sample  {100 * seconds / total:5.1f}%")
    kw = dict(image=bytes(64 * 64), height=64, width=64, label=1234, char="啊", writer="1001",
              orig_height=80, orig_width=70, source="1001-c.gnt:123456")
    for encoder in (schema.reference_char_example, schema.char_example):
        start = time.process_time()
        for _ in range(5000):
            encoder(**kw)
        print(f"  (schema.{encoder.__name__} alone: "
              f"{(time.process_time() - start) / 5000 * 1e6:.1f} µs/sample CPU)")
    for row in rows:
        best, cpu = min(row["walls"]), min(row["cpus"])
        print(f"  {row['mode']:<40} wall best {best:6.2f}s median "
              f"{statistics.median(row['walls']):6.2f}s = {row['samples'] / best:7,.0f} samples/s"
              f" | CPU {cpu:6.2f}s = {row['samples'] / cpu:7,.0f} samples/CPU-s")
    return rows, stage, read


def startup_cost(work: str, sample_file: str) -> dict:
    """Wall time of the job on a 10-sample file: the fixed cost of a run."""
    tiny_dir = os.path.join(work, "tiny")
    os.makedirs(tiny_dir, exist_ok=True)
    tiny = os.path.join(tiny_dir, "0001-tiny.gnt")
    samples = [(s.code, s.image) for s, _ in zip(gnt.read_gnt(sample_file), range(10))]
    gnt.write_gnt(tiny, samples)
    out = {}
    for mode, flags in (("in-process", ["--direct_num_workers", "1"]),
                        ("multi_processing x2", ["--direct_num_workers", "2",
                                                 "--direct_running_mode", "multi_processing"])):
        start, cpu0 = time.perf_counter(), _cpu_seconds()
        beam_job(tiny, os.path.join(work, "tiny-out"), flags)
        out[mode] = (time.perf_counter() - start, _cpu_seconds() - cpu0)
    return out


def ensure_synth(work: str, writers: int) -> str:
    synth_dir = os.path.join(work, f"synth-3755x{writers}")
    if len(glob.glob(os.path.join(synth_dir, "*.gnt"))) != writers:
        shutil.rmtree(synth_dir, ignore_errors=True)
        cmd = [os.path.join(os.path.dirname(sys.executable), "hccr-synth"), "--out", synth_dir,
               "--writers", str(writers), "--seed", "0", "--quiet"]
        print("making the synthetic set:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return os.path.join(synth_dir, "*.gnt")


def replicate(pattern: str, work: str, times: int) -> str:
    """A larger input made of symbolic links to the files of `pattern`, under new writer
    numbers (same per-sample work, `times` as many samples)."""
    files = sorted(glob.glob(pattern))
    rep_dir = os.path.join(work, f"replicated-{len(files)}x{times}")
    shutil.rmtree(rep_dir, ignore_errors=True)
    os.makedirs(rep_dir)
    for i in range(times):
        for j, path in enumerate(files):
            os.symlink(os.path.abspath(path),
                       os.path.join(rep_dir, f"{i * len(files) + j + 1:04d}-rep.gnt"))
    return os.path.join(rep_dir, "*.gnt")


def input_sets(real_dir: str, work: str, synth_writers: int, replicate_times: int
               ) -> list[tuple[str, str]]:
    """(label, glob) of the benchmark's inputs: the real sample when present, the synthetic
    set, and the synthetic set linked `replicate_times` times (when > 1)."""
    datasets = []
    real = os.path.join(real_dir, "*.gnt")
    if glob.glob(real):
        datasets.append(("real CASIA sample (21 classes)", real))
    else:
        print(f"(real sample not found at {real_dir}: skipped)")
    synth = ensure_synth(work, synth_writers)
    datasets.append((f"synthetic 3755 classes x {synth_writers} writers", synth))
    if replicate_times > 1:
        datasets.append((f"synthetic set linked {replicate_times} times "
                         f"({replicate_times * synth_writers} files)",
                         replicate(synth, work, replicate_times)))
    return datasets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real-dir", default=REAL_DIR)
    p.add_argument("--work", default="/tmp/hccr-bench-preprocess")
    p.add_argument("--synth-writers", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--replicate", type=int, default=4,
                   help="also run on the synthetic files linked this many times (0: skip)")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs visible, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    datasets = input_sets(args.real_dir, args.work, args.synth_writers, args.replicate)
    for label, pattern in datasets:
        bench_dataset(label, pattern, args.work, args.repeat)
    first = sorted(glob.glob(datasets[0][1]))[0]
    cost = startup_cost(args.work, first)
    print("\nfixed cost of a run (10-sample input): " +
          ", ".join(f"{k} {wall:.2f}s wall, {cpu:.2f}s CPU" for k, (wall, cpu) in cost.items()))
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
