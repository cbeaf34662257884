"""Writer ids, deterministic train/validation/test splits by writer, and the shard plan.

Splits are by writer, never by sample, so no writer's handwriting is in two splits. CASIA names
files by writer, so a file is one writer (`1001-c.gnt`, `001-f.gnt`, `C001-f-f.gnt`,
`001-P16.dgrl`) and a split is a set of files.

Split rules (`--split`):

* ``casia``: the CASIA-HWDB convention, the first 4/5 of each writer range for training and the
  last 1/5 for testing, as in the CASIA releases and papers:

  ==================  ===========  ==========  ==========
  release             writers      train       test
  ==================  ===========  ==========  ==========
  HWDB1.0 / HWDB2.0   1 - 420      1 - 336     337 - 420
  HWDB1.2 / HWDB2.2   501 - 800    501 - 740   741 - 800
  HWDB1.1 / HWDB2.1   1001 - 1300  1001 - 1240 1241 - 1300
  ICDAR-2013 comp.    C001 - C060  -           all
  ==================  ===========  ==========  ==========

  A writer outside these ranges is an error that names the file.
* ``none``: every file in split "train".
* ``auto`` (default): ``casia`` when every writer is a CASIA writer number, else ``none``.
* ``--split-glob NAME=GLOB`` (repeatable): the files each glob matches form split NAME.

``--validation-fraction F`` then moves the "train" writers whose hash is below F to split
"validation". The hash is the first 8 bytes of sha256(writer id) as a fraction of 2**64: stable
across runs, machines and Python versions (never Python's salted `hash()`). It never touches the
"test" writers: with ``--split casia --validation-fraction 0.1`` HWDB1.1 gives train (about 216
of writers 1001-1240), validation (the other 24 or so of them) and test (1241-1300), which is
what the training presets expect: they select models on "validation", never on "test".
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import posixpath
import re
from typing import Iterable, Sequence

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLIT_MODES = ("auto", "casia", "none")

# (release, first writer, last training writer, last writer)
CASIA_RANGES = (
    ("HWDB1.0/2.0", 1, 336, 420),
    ("HWDB1.2/2.2", 501, 740, 800),
    ("HWDB1.1/2.1", 1001, 1240, 1300),
)
_WRITER_TOKEN = re.compile(r"^([A-Za-z]?)(\d+)")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def writer_id(path: str) -> str:
    """The writer of a CASIA file, from its name.

    The file name's stem is cut at "-", "_", "." and spaces; the writer is the first part that
    starts with digits, optionally after one letter (kept: the ICDAR-2013 competition files are
    `C001-f-f.gnt`). "1001-c.gnt" -> "1001", "001-P16.dgrl" -> "001", "C001-f-f.gnt" -> "C001",
    "train-0003.gnt" -> "0003". With no such part, the stem itself.
    """
    name = posixpath.basename(str(path).replace("\\", "/"))
    stem = name.rsplit(".", 1)[0] if "." in name else name
    for part in re.split(r"[-_. ]+", stem):
        match = _WRITER_TOKEN.match(part)
        if match:
            return match.group(0)
    return stem


def casia_split(writer: str) -> str | None:
    """"train"/"test" for a CASIA writer id, None when it is in no CASIA range."""
    match = _WRITER_TOKEN.fullmatch(writer)
    if not match:
        return None
    prefix, number = match.group(1), int(match.group(2))
    if prefix:
        return TEST if prefix.upper() == "C" and 1 <= number <= 60 else None
    for _, first, last_train, last in CASIA_RANGES:
        if first <= number <= last:
            return TRAIN if number <= last_train else TEST
    return None


def hash_fraction(writer: str) -> float:
    """A stable pseudo-random number in [0, 1) for a writer id."""
    digest = hashlib.sha256(writer.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def check_split_name(name: str) -> str:
    if not _SPLIT_NAME.match(name):
        raise ValueError(f"split names are letters, digits and '_' (they start shard file "
                         f"names). Received: {name!r}")
    return name


class SplitError(ValueError):
    pass


def assign_splits(paths: Sequence[str], mode: str = "auto",
                  validation_fraction: float = 0.0) -> tuple[dict[str, str], str]:
    """Split of each file by its writer.

    Args:
      paths: the input files.
      mode: "auto", "casia" or "none" (see the module docstring).
      validation_fraction: fraction of the "train" writers (by hash) moved to "validation".

    Returns:
      ({path: split}, a one-line description of the rule applied).

    Raises:
      SplitError: mode "casia" and a writer outside the CASIA ranges.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode must be one of {SPLIT_MODES}. Received: {mode!r}")
    casia = {p: casia_split(writer_id(p)) for p in paths}
    outside = sorted(p for p, s in casia.items() if s is None)
    if mode == "casia" and outside:
        raise SplitError(
            f"--split casia: {len(outside)} file(s) are not named by a CASIA writer number "
            f"(HWDB1.0 1-420, HWDB1.2 501-800, HWDB1.1 1001-1300, competition C001-C060), e.g. "
            f"{outside[0]!r} (writer {writer_id(outside[0])!r}); use --split none, "
            f"--split-glob NAME=GLOB or --validation-fraction")
    if mode == "casia" or (mode == "auto" and not outside):
        splits, rule = {p: s for p, s in casia.items()}, "casia"
    else:
        splits = {p: TRAIN for p in paths}
        rule = "none" if mode == "none" else "auto: none (writers are not CASIA writer numbers)"
    return apply_validation_fraction(splits, validation_fraction), (
        rule + (f", validation fraction {validation_fraction} by sha256(writer)"
                if validation_fraction else ""))


def apply_validation_fraction(splits: dict[str, str], fraction: float) -> dict[str, str]:
    """Moves the "train" files whose writer hashes below `fraction` to "validation".

    A writer's split depends only on its own id (adding writers never moves another one). With
    few writers the threshold can select none: then the writer with the smallest hash moves, so
    a positive fraction over two or more train writers always yields a validation split.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1). Received: {fraction}")
    if not fraction:
        return dict(splits)
    train_writers = sorted({writer_id(p) for p, s in splits.items() if s == TRAIN},
                           key=hash_fraction)
    chosen = {w for w in train_writers if hash_fraction(w) < fraction}
    if not chosen and len(train_writers) >= 2:
        chosen = {train_writers[0]}
    return {p: (VALIDATION if s == TRAIN and writer_id(p) in chosen else s)
            for p, s in splits.items()}


def relative_names(paths: Sequence[str]) -> dict[str, str]:
    """Each path relative to the deepest directory common to all of them ("/"-separated).

    These names go into the `source` feature and the shard sort order, so shards do not depend
    on where (or on which filesystem) the inputs live.
    """
    split = {p: str(p).replace("\\", "/").split("/") for p in paths}
    dirs = [parts[:-1] for parts in split.values()]
    common = 0
    if dirs:
        for column in zip(*dirs):
            if any(c != column[0] for c in column):
                break
            common += 1
    return {p: "/".join(parts[common:]) for p, parts in split.items()}


@dataclasses.dataclass(frozen=True)
class SizedFile:
    key: str   # the sort key (relative name)
    size: int


def plan_shards(files: Iterable[SizedFile], num_shards: int) -> list[list[str]]:
    """Distributes whole files over `num_shards` shards, balanced by bytes, deterministically.

    Largest file first, each to the currently smallest shard (ties: lowest shard index); each
    shard lists its files by key. The plan depends only on the file keys and sizes, never on the
    number of workers.

    Returns:
      `num_shards` lists of file keys (a shard may be empty when there are fewer files).
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1. Received: {num_shards}")
    heap = [(0, i) for i in range(num_shards)]
    shards: list[list[str]] = [[] for _ in range(num_shards)]
    for f in sorted(files, key=lambda f: (-f.size, f.key)):
        load, index = heapq.heappop(heap)
        shards[index].append(f.key)
        heapq.heappush(heap, (load + f.size, index))
    return [sorted(s) for s in shards]


def auto_num_shards(num_files: int, total_bytes: int, *, target_bytes: int = 64 << 20,
                    minimum: int = 16) -> int:
    """Default shard count of a split: about `target_bytes` of input per shard, but at least
    `minimum` shards (for parallelism) and at most one shard per file (shards hold whole files).
    """
    wanted = max(minimum, math.ceil(total_bytes / target_bytes))
    return max(1, min(num_files, wanted))
