"""Opening files on local disk or any `tf.io.gfile` scheme (gs://, s3://, hdfs://, ...).

Local paths use the built-in `open` so that reading a GNT file never pays for importing
TensorFlow; URLs with a scheme go through `tf.io.gfile`, which tensorflow-io extends with s3://,
hdfs:// and az://.
"""
from __future__ import annotations

import contextlib
import glob as _glob
import os
from typing import BinaryIO, Iterator


def has_scheme(path: str) -> bool:
    return "://" in str(path)


def join(directory: str, *names: str) -> str:
    """Joins paths for local directories and URLs (gs://, s3://: always "/") alike."""
    if has_scheme(directory):
        import posixpath
        return posixpath.join(directory, *names)
    return os.path.join(directory, *names)


@contextlib.contextmanager
def open_binary(path: str, mode: str = "rb") -> Iterator[BinaryIO]:
    """Opens `path` for binary reading or writing, whatever its scheme."""
    path = os.fspath(path)
    if has_scheme(path):
        from beam_preprocess.contract.tfio import gfile
        with gfile().GFile(path, mode) as f:
            yield f
    else:
        with open(path, mode) as f:
            yield f


def expand_globs(patterns: list[str]) -> list[str]:
    """Expands file globs (local or with a scheme) into a sorted, de-duplicated list of files.

    Raises:
      FileNotFoundError: a pattern matches no file; the message names the pattern.
    """
    files: list[str] = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        if has_scheme(pattern):
            from beam_preprocess.contract.tfio import gfile
            matched = gfile().glob(pattern)
        elif os.path.isdir(pattern):
            matched = [os.path.join(pattern, f) for f in os.listdir(pattern)
                       if f.lower().endswith((".gnt", ".dgrl"))]
        else:
            matched = _glob.glob(pattern)
        if not matched:
            raise FileNotFoundError(f"input pattern matches no file: {pattern!r}")
        files.extend(matched)
    return sorted(set(files))
