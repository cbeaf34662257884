"""`hccr-inspect FILE...`: a JSON summary of CASIA GNT/DGRL files, with every problem found."""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

from beam_preprocess import cli_errors
from beam_preprocess.contract import dgrl, gnt
from beam_preprocess.contract.errors import CasiaFormatError
from beam_preprocess.contract.fileio import expand_globs


def file_format(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".gnt"):
        return "gnt"
    if lower.endswith(".dgrl"):
        return "dgrl"
    return None


class _Range:
    def __init__(self):
        self.lo = self.hi = None

    def add(self, value: int) -> None:
        self.lo = value if self.lo is None else min(self.lo, value)
        self.hi = value if self.hi is None else max(self.hi, value)

    def as_dict(self) -> dict:
        return {"min": self.lo, "max": self.hi}


def _ordered_counts(counts: collections.Counter) -> dict:
    return {c: counts[c] for c in sorted(counts, key=lambda c: (c.encode("gb18030", "replace"), c))}


def skipped_problem(item: gnt.SkippedBytes) -> dict:
    """A problem row for a byte range the reader skipped (with its end and length)."""
    resumed = ("to the end of the file" if item.at_end
               else f"up to the next well-formed record at byte {item.end}")
    return {"file": item.path, "offset": item.offset, "end": item.end,
            "bytes_skipped": item.bytes_skipped,
            "reason": f"{item.reason}; {item.bytes_skipped} bytes skipped {resumed}"}


def inspect_files(paths: list[str]) -> dict:
    """Summarizes GNT and DGRL files.

    Returns:
      A JSON-able dict: per-format totals, per-character counts, size ranges, per-file rows and
      `problems` (file, offset, reason) — malformed data is reported, never raised, so one bad
      file does not hide the rest. `malformed` counts files with a structural error.
    """
    g_counts, d_counts = collections.Counter(), collections.Counter()
    g_h, g_w, l_h, l_w = _Range(), _Range(), _Range(), _Range()
    g_files = g_samples = d_files = d_pages = d_lines = 0
    per_file, problems, malformed = [], [], set()
    for path in paths:
        kind = file_format(path)
        if kind is None:
            problems.append({"file": path, "offset": 0,
                             "reason": "not a CASIA file: expected a .gnt or .dgrl extension"})
            malformed.add(path)
            continue
        try:
            if kind == "gnt":
                g_files += 1
                samples = 0
                for item in gnt.read_gnt(path, resync=True):
                    if isinstance(item, gnt.SkippedBytes):
                        problems.append(skipped_problem(item))
                        malformed.add(path)
                        continue
                    samples += 1
                    g_h.add(item.image.shape[0])
                    g_w.add(item.image.shape[1])
                    if item.char is None:
                        problems.append({"file": path, "offset": item.offset,
                                         "reason": item.problem})
                    else:
                        g_counts[item.char] += 1
                g_samples += samples
                per_file.append({"file": path, "format": "gnt", "samples": samples})
            else:
                d_files += 1
                page = dgrl.read_dgrl(path, resync=True)
                d_pages += 1
                d_lines += len(page.lines)
                for line in page.lines:
                    l_h.add(line.image.shape[0])
                    l_w.add(line.image.shape[1])
                    d_counts.update(c for c in line.text if c != dgrl.UNKNOWN_CHAR)
                    for problem in line.problems:
                        problems.append({"file": path, "offset": line.offset,
                                         "reason": f"line {line.index}: {problem}"})
                for item in page.skipped:
                    problems.append(skipped_problem(item))
                    malformed.add(path)
                per_file.append({"file": path, "format": "dgrl", "lines": len(page.lines),
                                 "characters": sum(len(li.text) for li in page.lines),
                                 "page_size": [page.header.height, page.header.width]})
        except CasiaFormatError as err:
            problems.append(err.as_dict())
            malformed.add(path)
        except OSError as err:
            problems.append({"file": path, "offset": 0, "reason": f"cannot read: {err}"})
            malformed.add(path)
    summary = {"files": len(paths)}
    if g_files:
        summary["gnt"] = {"files": g_files, "samples": g_samples, "classes": len(g_counts),
                          "image_height": g_h.as_dict(), "image_width": g_w.as_dict(),
                          "counts": _ordered_counts(g_counts)}
    if d_files:
        summary["dgrl"] = {"files": d_files, "pages": d_pages, "lines": d_lines,
                           "characters": sum(d_counts.values()), "classes": len(d_counts),
                           "line_height": l_h.as_dict(), "line_width": l_w.as_dict(),
                           "counts": _ordered_counts(d_counts)}
    summary.update(per_file=per_file, problems=problems, malformed_files=sorted(malformed))
    return summary


@cli_errors.entry_point("hccr-inspect")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="hccr-inspect",
        description="Print a JSON summary of CASIA-HWDB .gnt (isolated characters) and .dgrl "
                    "(text-line pages) files: sample/page/line/character counts, classes, "
                    "per-character counts, image size ranges, and every problem found with its "
                    "file and byte offset. Exit status 1 when any file is malformed.",
        epilog="Example: hccr-inspect data/HWDB1.1trn_gnt/*.gnt --no-counts")
    parser.add_argument("files", nargs="+", help="files, directories or globs (any gfile scheme)")
    parser.add_argument("--no-counts", action="store_true",
                        help="leave out the per-character counts")
    parser.add_argument("--indent", type=int, default=1, help="JSON indentation (1)")
    args = parser.parse_args(argv)
    try:
        paths = expand_globs(args.files)
    except FileNotFoundError as err:
        print(f"hccr-inspect: {err}", file=sys.stderr)
        return 2
    summary = inspect_files(paths)
    if args.no_counts:
        for kind in ("gnt", "dgrl"):
            summary.get(kind, {}).pop("counts", None)
    try:
        json.dump(summary, sys.stdout, ensure_ascii=False, indent=args.indent)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `hccr-inspect ... | head` is a normal way to read it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    for problem in summary["problems"]:
        print(f"hccr-inspect: {problem['file']}: byte offset {problem['offset']}: "
              f"{problem['reason']}", file=sys.stderr)
    return 1 if summary["malformed_files"] else 0


if __name__ == "__main__":
    sys.exit(main())
