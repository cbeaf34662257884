"""The TFRecord schema shared by the Beam job (writer) and the trainers (reader).

Every record is a serialized `tf.train.Example`. Images are stored raw (uint8, row-major,
background 255 as in CASIA files) because decoding raw bytes is the cheapest thing tf.data can do
per sample; shards can be GZIP-compressed instead.

Task "chars" (isolated characters, fixed-size images):

  =============  ======  ==================================================================
  feature        type    meaning
  =============  ======  ==================================================================
  image          bytes   height*width uint8 pixels, background 255
  height, width  int64   stored image size (the job's --image-size)
  label          int64   class id: line number of the character in charset.txt
  char           bytes   the character, UTF-8
  writer         bytes   writer id (from the file name)
  orig_height,   int64   size of the ink bitmap in the source file, before resizing
  orig_width
  source         bytes   "<file>:<byte offset>" of the sample
  =============  ======  ==================================================================

Task "lines" (text lines, fixed height, variable width): the same `image`, `height`, `width`,
`writer`, `orig_height`, `orig_width` and `source`, plus

  =============  ======  ==================================================================
  labels         int64[] class ids of the characters of the line, in reading order
  text           bytes   the line's text, UTF-8
  =============  ======  ==================================================================

The encoder below writes the protobuf wire format directly, so Beam workers never import
TensorFlow; `tests/test_schema.py` checks it against `tf.io.parse_single_example`.
"""
from __future__ import annotations

import struct
from typing import Mapping, Sequence, Union

SCHEMA_VERSION = 1
TASKS = ("chars", "lines")

CHAR_INT_FEATURES = ("height", "width", "label", "orig_height", "orig_width")
LINE_INT_FEATURES = ("height", "width", "orig_height", "orig_width")
BYTES_FEATURES = {"chars": ("image", "char", "writer", "source"),
                  "lines": ("image", "text", "writer", "source")}

FeatureValue = Union[bytes, str, int, Sequence[int], Sequence[float], float]


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are 10-byte two's-complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value: FeatureValue) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return _field(1, _field(1, value))  # Feature.bytes_list.value
    if isinstance(value, float):
        value = [value]
    if isinstance(value, int):
        value = [value]
    values = list(value)
    if values and isinstance(values[0], float):
        return _field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))
    return _field(3, _field(1, b"".join(_varint(int(v)) for v in values)))


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serializes a dict as a `tf.train.Example` (keys sorted, so the bytes are deterministic).

    Values: bytes/str -> bytes_list, int or list of ints -> int64_list, float or list of floats ->
    float_list.
    """
    entries = b"".join(
        _field(1, _field(1, key.encode("utf-8")) + _field(2, _feature(features[key])))
        for key in sorted(features))
    return _field(1, entries)


def char_example(*, image: bytes, height: int, width: int, label: int, char: str, writer: str,
                 orig_height: int, orig_width: int, source: str) -> bytes:
    return encode_example(dict(image=image, height=height, width=width, label=label, char=char,
                               writer=writer, orig_height=orig_height, orig_width=orig_width,
                               source=source))


def line_example(*, image: bytes, height: int, width: int, labels: Sequence[int], text: str,
                 writer: str, orig_height: int, orig_width: int, source: str) -> bytes:
    return encode_example(dict(image=image, height=height, width=width, labels=list(labels),
                               text=text, writer=writer, orig_height=orig_height,
                               orig_width=orig_width, source=source))


def feature_spec(task: str) -> dict:
    """The `tf.io.parse_example` spec for a task (imports TensorFlow)."""
    import tensorflow as tf
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}. Received: {task!r}")
    ints = CHAR_INT_FEATURES if task == "chars" else LINE_INT_FEATURES
    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in ints}
    spec.update({name: tf.io.FixedLenFeature([], tf.string) for name in BYTES_FEATURES[task]})
    if task == "lines":
        spec["labels"] = tf.io.VarLenFeature(tf.int64)
    return spec


# metadata.json, written by the job next to the shards and read by training/evaluation/export.
METADATA_FILE = "metadata.json"
CHARSET_FILE = "charset.txt"
REJECTS_DIR = "rejects"


def shard_pattern(split: str) -> str:
    """Glob (relative to the output directory) matching a split's shards."""
    return f"{split}-*-of-*.tfrecord*"


def shard_name(split: str, index: int, count: int, compression: str = "") -> str:
    """`<split>-<index:05d>-of-<count:05d>.tfrecord[.gz]`: shard `index` of `count` (the
    readers open exactly the `count` names metadata.json's `num_shards` gives)."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord" + (".gz" if compression == "GZIP"
                                                             else "")
