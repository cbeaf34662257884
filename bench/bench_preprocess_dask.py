"""Benchmark of `hccr-preprocess` on a 2-worker Dask cluster against the plain loop and the
Beam job in-process, on the inputs of bench_preprocess.py, in one run.

* plain:     bench_preprocess.plain_loop (one process, the per-sample work, no framework).
* beam-1:    the Beam job on the DirectRunner in-process (--direct_num_workers 1).
* dask-2:    the Beam job with --runner DaskRunner on a local Dask cluster that this script
             starts: `dask scheduler` and two `dask worker --nthreads 1 --no-nanny` processes
             on 127.0.0.1 (started once, before the runs; its start-up is reported apart).

Inputs: the real CASIA sample (11,154 samples), the synthetic set (3755 classes x 10 writers,
37,550 samples, made once with hccr-synth and cached under --work), and the synthetic files
linked 4 times (150,200 samples). Wall time is what a user waits for; CPU seconds add this
process, its finished children and the scheduler and worker processes (psutil), so they stay
meaningful when other jobs share the machine. Every Dask run's shards and rejects must be
byte-identical to the in-process run's: the script stops otherwise.

    .venv/bin/python bench/bench_preprocess_dask.py             # best of 3 per mode
    .venv/bin/python bench/bench_preprocess_dask.py --repeat 1 --replicate 0
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time

import psutil

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

import bench_preprocess  # noqa: E402

from beam_preprocess.contract import gnt, schema  # noqa: E402
from beam_preprocess.contract.charset import Charset  # noqa: E402
from tests.process_groups import stop_in_reverse  # noqa: E402


class LocalDaskCluster:
    """A scheduler and `workers` single-threaded worker processes on 127.0.0.1."""

    def __init__(self, workers: int, log_dir: str):
        self.log_dir, self.procs = log_dir, []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        start = time.perf_counter()
        self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                    "--no-dashboard")
        for i in range(workers):
            self._start(f"worker-{i}", "worker", self.address, "--no-nanny", "--nthreads", "1",
                        "--no-dashboard", "--host", "127.0.0.1", "--local-directory", log_dir)
        import distributed
        with distributed.Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
            self.startup_seconds = time.perf_counter() - start
            # Import the job's code in the workers now, so that they and this process hold
            # the same version (the job refuses workers that imported other code).
            client.run(lambda: __import__("beam_preprocess").SOURCE_SHA256)

    def _start(self, name: str, *args: str) -> None:
        with open(os.path.join(self.log_dir, f"{name}.log"), "wb") as log:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT,
                cwd=self.log_dir, env=dict(os.environ, PYTHONPATH=REPO),
                start_new_session=True))

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        stop_in_reverse(self.procs)  # workers first, one at a time


def output_digest(out_dir: str) -> str:
    """sha256 over the names and bytes of every shard and rejects file."""
    digest = hashlib.sha256()
    paths = sorted(glob.glob(os.path.join(out_dir, "*.tfrecord*")) +
                   glob.glob(os.path.join(out_dir, schema.REJECTS_DIR, "*.jsonl")))
    for path in paths:
        digest.update(os.path.relpath(path, out_dir).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def timed(fn, repeat: int, setup, cluster: LocalDaskCluster):
    """Wall and CPU seconds (this process, its children, the Dask processes) of each call."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        setup()
        cpu0 = bench_preprocess._cpu_seconds() + cluster.cpu_seconds()
        wall0 = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - wall0)
        cpus.append(bench_preprocess._cpu_seconds() + cluster.cpu_seconds() - cpu0)
    return walls, cpus, result


def bench_dataset(label: str, pattern: str, work: str, repeat: int,
                  cluster: LocalDaskCluster) -> list[dict]:
    files = sorted(glob.glob(pattern))
    read = sum(1 for f in files for _ in gnt.read_gnt(f, resync=True))
    out = os.path.join(work, "out")
    modes = [
        ("plain loop (1 process)", lambda: bench_preprocess.plain_loop(
            files, out + "-plain", Charset.named("gb2312-1")), out + "-plain"),
        ("beam DirectRunner in-process", lambda: bench_preprocess.beam_job(
            pattern, out + "-beam", ["--direct_num_workers", "1"]), out + "-beam"),
        ("beam DaskRunner, 2 workers", lambda: bench_preprocess.beam_job(
            pattern, out + "-dask", ["--runner", "DaskRunner", "--dask_client_address",
                                     cluster.address]), out + "-dask"),
    ]
    rows = []
    for mode, fn, directory in modes:
        walls, cpus, counts = timed(
            fn, repeat, lambda d=directory: shutil.rmtree(d, ignore_errors=True), cluster)
        assert counts.get("read", read) == read, (mode, counts, read)
        rows.append(dict(dataset=label, mode=mode, samples=read, walls=walls, cpus=cpus))
    same = output_digest(out + "-beam") == output_digest(out + "-dask")
    if not same:
        raise SystemExit(f"{label}: the Dask run's shards differ from the in-process run's")
    print(f"\n{label}: {read} samples, {len(files)} files; Dask shards byte-identical to "
          f"in-process: {same}")
    plain = min(rows[0]["walls"])
    for row in rows:
        best, cpu = min(row["walls"]), min(row["cpus"])
        print(f"  {row['mode']:<32} wall best {best:6.2f}s median "
              f"{statistics.median(row['walls']):6.2f}s = {row['samples'] / best:7,.0f} "
              f"samples/s ({plain / best:4.2f}x the plain loop) | CPU {cpu:6.2f}s = "
              f"{row['samples'] / cpu:7,.0f} samples/CPU-s", flush=True)
    return rows


def fixed_cost(work: str, sample_file: str, cluster: LocalDaskCluster) -> dict:
    """Wall and CPU seconds of the job on a 10-sample file: the fixed cost of a run."""
    tiny_dir = os.path.join(work, "tiny")
    os.makedirs(tiny_dir, exist_ok=True)
    tiny = os.path.join(tiny_dir, "0001-tiny.gnt")
    gnt.write_gnt(tiny, [(s.code, s.image) for s, _ in zip(gnt.read_gnt(sample_file),
                                                          range(10))])
    out = {}
    for mode, flags in (("in-process", ["--direct_num_workers", "1"]),
                        ("Dask x2", ["--runner", "DaskRunner", "--dask_client_address",
                                     cluster.address])):
        walls, cpus, _ = timed(lambda flags=flags: bench_preprocess.beam_job(
            tiny, os.path.join(work, "tiny-out"), flags), 3, lambda: None, cluster)
        out[mode] = (min(walls), min(cpus))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real-dir", default=bench_preprocess.REAL_DIR)
    p.add_argument("--work", default="/tmp/hccr-bench-preprocess")
    p.add_argument("--synth-writers", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--replicate", type=int, default=4,
                   help="also run on the synthetic files linked this many times (0: skip)")
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes (2)")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    datasets = bench_preprocess.input_sets(args.real_dir, args.work, args.synth_writers,
                                           args.replicate)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs visible, load average "
          f"{os.getloadavg()[0]:.2f} at start", flush=True)
    log_dir = os.path.join(args.work, "dask-logs")
    os.makedirs(log_dir, exist_ok=True)
    cluster = LocalDaskCluster(args.workers, log_dir)
    try:
        print(f"Dask cluster {cluster.address}: scheduler + {args.workers} workers up in "
              f"{cluster.startup_seconds:.2f}s (once, not in the figures below)", flush=True)
        for label, pattern in datasets:
            bench_dataset(label, pattern, args.work, args.repeat, cluster)
        cost = fixed_cost(args.work, sorted(glob.glob(datasets[0][1]))[0], cluster)
        print("\nfixed cost of a run (10-sample input, best of 3): " + ", ".join(
            f"{k} {wall:.2f}s wall, {cpu:.2f}s CPU" for k, (wall, cpu) in cost.items()))
    finally:
        cluster.stop()
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
