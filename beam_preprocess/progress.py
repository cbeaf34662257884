"""Progress of long work on stderr through tqdm: a bar on a terminal, periodic lines in logs.

    bar = progress_bar(total, "eval test", unit="ex")
    for batch in batches:
        ...
        bar.update(len(batch))
    bar.close()

The one piece kept by hand is `_LogLines`: tqdm redraws its line with a carriage return even
when its file is not a terminal, which in a log file or CI output piles every redraw onto one
endless line. In logs each redraw becomes its own plain line, and tqdm's `mininterval` spaces
them `log_interval_s` apart (plus one line at the start and one at the end).
"""
from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 5.0


class _LogLines:
    """A file for tqdm that writes each redraw (`"\\r" + line + padding`) as one line, and
    skips a redraw that reports the same count as the line before (tqdm redraws at `close()`
    even when the last `update` has just drawn the final count)."""

    def __init__(self, stream):
        self.stream = stream
        self._last_count = None

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if not line:  # tqdm's closing newline and its empty test writes
            return
        count = line.rsplit(" [", 1)[0]  # "desc: 40%|####      | 4/10", without time and rate
        if count != self._last_count:
            self._last_count = count
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, desc: str, *, unit: str = "it", enabled: bool = True,
                 stream=None, log_interval_s: float = LOG_INTERVAL_S) -> tqdm:
    """A tqdm bar counting to `total` on `stream` (default: stderr); `update(n)`, `close()`.

    Args:
      total: the count at which the work is done.
      desc: what is counted, first on the line ("eval test", "hccr-synth").
      unit: the unit of the count and the rate.
      enabled: False prints nothing (a library call or a test that wants quiet).
      stream: where to write; a terminal (`isatty()`) gets a bar redrawn in place, anything
        else a plain line every `log_interval_s` seconds.
    """
    stream = stream if stream is not None else sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=stream)
    # miniters=0: lines purely by time, one every log_interval_s seconds (tqdm otherwise adapts
    # how many updates it skips between redraws, and its spacing with it).
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=_LogLines(stream),
                mininterval=log_interval_s, miniters=0, ascii=True, dynamic_ncols=False)
