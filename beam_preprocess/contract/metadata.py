"""`metadata.json`: what preprocessing wrote, read back by training, evaluation and export.

Fields (schema version 1)::

    schema_version   int     SCHEMA_VERSION of beam_preprocess/contract/schema.py
    task             str     "chars" or "lines"
    image_height     int     stored image height
    image_width      int     stored image width (chars); null for lines (variable width)
    num_classes      int     len(charset.txt)
    charset_sha256   str     sha256 of charset.txt's bytes
    compression      str     "" or "GZIP"
    splits           {split: {"num_examples": int, "num_shards": int}}
    class_counts     {split: {char: count}}
    counts           {"read": int, "written": int, "rejected": int}  read = written + rejected
                     (lines: + pooled); a byte range a reader skipped counts as one record
                     read and one rejected (reason malformed_record or malformed_tail)
    rejects          {reason: count}
    bytes_written    int     bytes of examples in the shards
    bytes_skipped    int     bytes of the damaged ranges the readers skipped (see gnt.py)
    synthetic_writers        only with `hccr-preprocess --synth-writers N`: {"count", "seed",
                     "split" ("train"), "writers" ("S0001-S<N>"), "directory", "classes" (all
                     rendered), "samples", "fonts"}; see beam_preprocess/synthetic/writers.py
    command          str     the command line that produced the directory
    created          str     ISO-8601 UTC time
"""
from __future__ import annotations

import dataclasses
import json

from beam_preprocess.contract import schema
from beam_preprocess.contract.charset import Charset
from beam_preprocess.contract.fileio import join, open_binary


@dataclasses.dataclass
class DatasetInfo:
    """A preprocessed directory's metadata, with its charset loaded and checked."""
    data_dir: str
    task: str
    image_height: int
    image_width: int | None
    charset: Charset
    compression: str
    splits: dict
    raw: dict

    @property
    def num_classes(self) -> int:
        return len(self.charset)

    def num_examples(self, split: str) -> int:
        if split not in self.splits:
            raise KeyError(f"{self.data_dir}: no split {split!r}; it has {sorted(self.splits)}")
        return int(self.splits[split]["num_examples"])

    def shard_glob(self, split: str) -> str:
        return join(self.data_dir, schema.shard_pattern(split))


def load(data_dir: str) -> DatasetInfo:
    """Reads `metadata.json` and `charset.txt` of a preprocessed directory (any gfile scheme).

    Raises:
      FileNotFoundError: the directory has no metadata.json (not a preprocessed directory).
      ValueError: the schema version is unknown or charset.txt does not match its recorded hash.
    """
    path = join(data_dir, schema.METADATA_FILE)
    try:
        with open_binary(path) as f:
            raw = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: is {data_dir!r} a directory written by "
                                f"hccr-preprocess?") from None
    version = raw.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r} is not supported (this version "
                         f"reads {schema.SCHEMA_VERSION})")
    charset = Charset.load(join(data_dir, schema.CHARSET_FILE))
    if raw.get("charset_sha256") and charset.sha256() != raw["charset_sha256"]:
        raise ValueError(f"{join(data_dir, schema.CHARSET_FILE)} does not match the sha256 "
                         f"recorded in {path}: the directory was modified after preprocessing")
    if raw.get("num_classes") not in (None, len(charset)):
        raise ValueError(f"{path}: num_classes {raw['num_classes']} != {len(charset)} characters "
                         f"in charset.txt")
    return DatasetInfo(data_dir=data_dir, task=raw["task"], image_height=int(raw["image_height"]),
                       image_width=raw.get("image_width"), charset=charset,
                       compression=raw.get("compression", ""), splits=raw.get("splits", {}),
                       raw=raw)


def to_bytes(metadata: dict) -> bytes:
    """`metadata.json`'s bytes: the schema version added, pretty-printed, UTF-8, keys sorted
    for stable diffs. The one format, whoever writes the file (`write`, the Beam job)."""
    metadata = {"schema_version": schema.SCHEMA_VERSION, **metadata}
    return json.dumps(metadata, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


def write(data_dir: str, metadata: dict) -> None:
    """Writes `metadata.json` into `data_dir` (any `tf.io.gfile` scheme)."""
    with open_binary(join(data_dir, schema.METADATA_FILE), "wb") as f:
        f.write(to_bytes(metadata))
