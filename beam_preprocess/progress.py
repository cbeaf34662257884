"""A dependency-free progress line for long work (a bar on a terminal, periodic lines in logs)."""
from __future__ import annotations

import sys
import time


class Progress:
    """Reports `done/total` with rate and ETA on stderr.

    On a terminal it redraws one line; otherwise (CI logs, files) it prints a line at most every
    `interval` seconds and at the end, so logs stay short.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "it", interval: float = 5.0,
                 stream=None, enabled: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.done = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.interval or self.done >= self.total):
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / self.total if self.total else 1.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * int(frac * 24)
        text = (f"{self.desc}: [{bar:<24}] {self.done}/{self.total} {self.unit} "
                f"({100 * frac:5.1f}%, {rate:,.0f} {self.unit}/s, eta {eta:4.0f}s)")
        if self.tty:
            self.stream.write("\r" + text + ("\n" if self.done >= self.total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done < self.total:
            self._draw(time.monotonic())
