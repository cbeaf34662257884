"""Stopping the helper processes that tests and benchmarks start (a local Dask cluster)."""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Sequence


def stop_in_reverse(procs: Sequence[subprocess.Popen], timeout_s: float = 10.0) -> None:
    """Stops processes started with `start_new_session=True`, by their process group, last
    started first and one at a time: SIGTERM, then SIGKILL after `timeout_s`.

    One at a time, workers before their scheduler: stopped all at once, the workers wait for
    the scheduler that is going away.
    """
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
