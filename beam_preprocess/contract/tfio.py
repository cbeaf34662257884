"""Lazy access to `tf.io.gfile`, with tensorflow-io's extra filesystems registered when present."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def gfile():
    """Returns `tf.io.gfile` after registering tensorflow-io's s3/hdfs/az schemes if installed."""
    import tensorflow as tf
    try:
        import tensorflow_io  # noqa: F401  (registers s3://, hdfs://, az://, http(s)://)
    except ImportError:
        pass
    return tf.io.gfile
