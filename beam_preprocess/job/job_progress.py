"""Progress of `hccr-preprocess` while it runs: files done, samples, rate, rejects so far.

Beam's local FnApiRunner returns its result only when the job has ended, so its counters
cannot be polled while it runs. Instead each `WriteShardFn` call, after every input file,
replaces a small JSON file (one per shard task) in a local progress directory with its
running totals; a driver thread (`ProgressReporter`) adds them up every few seconds and prints
one line to stderr. Works in-process and with `--direct_running_mode multi_processing` (the
workers are processes on the same machine). The progress files live outside the output
directory and never touch the shards.

Runners that run elsewhere (Dataflow, Flink, Spark, Dask) have their own UI: `runner_ui_hint`
says where it is, in one line.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import threading
import time
from typing import TextIO

FIELDS = ("files", "read", "written", "rejected")
DEFAULT_INTERVAL_S = 5.0


def write_task_progress(progress_dir: str, task_key: str, totals: dict) -> None:
    """Replaces the progress file of one shard task with its running `totals` (atomically, so
    the reporter never reads half a file)."""
    path = os.path.join(progress_dir, f"{task_key}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({k: int(totals.get(k, 0)) for k in FIELDS}, f)
    os.replace(tmp, path)


def read_progress(progress_dir: str) -> dict:
    """The totals over every task's progress file (a file being replaced is skipped)."""
    totals = dict.fromkeys(FIELDS, 0)
    for path in glob.glob(os.path.join(progress_dir, "*.json")):
        try:
            with open(path, encoding="utf-8") as f:
                task = json.load(f)
        except (OSError, ValueError):
            continue
        for k in FIELDS:
            totals[k] += int(task.get(k, 0))
    return totals


def progress_line(totals: dict, total_files: int, elapsed_s: float) -> str:
    """`files 3/40, 9,120 samples (1,520/s), 12 rejected, 6 s`."""
    rate = totals["read"] / elapsed_s if elapsed_s > 0 else 0.0
    return (f"progress: files {totals['files']}/{total_files}, {totals['read']:,} samples "
            f"({rate:,.0f}/s), {totals['rejected']:,} rejected, {elapsed_s:.0f} s")


class ProgressReporter:
    """A driver thread printing `progress_line` every `interval_s` while the job runs.

    On a terminal the line is rewritten in place (\\r); in logs and CI each report is its own
    line. Use as a context manager around `pipeline.run()`; a last line is printed on exit.
    """

    def __init__(self, progress_dir: str, total_files: int, interval_s: float = DEFAULT_INTERVAL_S,
                 stream: TextIO | None = None, prefix: str = ""):
        self.progress_dir, self.total_files = progress_dir, total_files
        self.interval_s = interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.in_place = _is_tty(self.stream)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hccr-progress", daemon=True)
        self._start = 0.0

    def report(self) -> str:
        line = self.prefix + progress_line(read_progress(self.progress_dir), self.total_files,
                                           time.monotonic() - self._start)
        if self.in_place:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        return line

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.report()

    def __enter__(self) -> ProgressReporter:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.report()
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def runner_ui_hint(runner_path: str | None, options) -> str:
    """Where a runner that is not the local one shows the job's progress, in one line."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    all_options = options.get_all_options(drop_default=True, retain_unknown_options=True)
    name = (runner_path or "").rsplit(".", 1)[-1]
    if name.startswith("Dataflow"):
        gcp = options.view_as(GoogleCloudOptions)
        return ("progress: see the Dataflow console, https://console.cloud.google.com/dataflow/"
                f"jobs?project={gcp.project or 'PROJECT'} (region {gcp.region or 'REGION'})")
    if name.startswith("Flink"):
        master = all_options.get("flink_master") or "localhost:8081"
        return f"progress: see the Flink web UI, http://{master.split('://')[-1]}"
    if name.startswith("Spark"):
        return "progress: see the Spark UI of the cluster's driver, http://DRIVER_HOST:4040"
    if name.startswith("Dask"):
        # Read through DaskOptions: whether get_all_options keeps an option depends on which
        # options classes other imports have registered.
        from apache_beam.runners.dask.dask_runner import DaskOptions
        address = (options.view_as(DaskOptions).address
                   or all_options.get("dask_client_address") or "tcp://SCHEDULER:8786")
        host = address.split("://")[-1].rsplit(":", 1)[0]
        return f"progress: see the Dask dashboard, http://{host}:8787"
    return f"progress: see the {name or 'runner'}'s own UI (no progress lines from this driver)"
