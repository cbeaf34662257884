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

The codec below writes the protobuf wire format directly, so Beam workers never import
TensorFlow. `encode_example` is the reference: generic, any feature dict, the one definition of
the format. `char_example` is a specialization of it for the job's hot path (about 8 µs a record
instead of 40, a third of the per-sample cost of preprocessing): the field layout of the nine
"chars" features is fixed, so their keys are encoded once and only the values per record.
`tests/test_schema.py` checks that both give the same bytes and parses them with TensorFlow.
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


_SMALL = [bytes((i,)) for i in range(128)]  # the varints of 0-127: one byte each


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are 10-byte two's-complement varints
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its encoded tag, varint length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) by number."""
    return _ld(_varint(number << 3 | 2), payload)


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


def reference_char_example(*, image: bytes, height: int, width: int, label: int, char: str,
                           writer: str, orig_height: int, orig_width: int, source: str) -> bytes:
    """A "chars" record by the generic `encode_example`: what `char_example` must equal."""
    return encode_example(dict(image=image, height=height, width=width, label=label, char=char,
                               writer=writer, orig_height=orig_height, orig_width=orig_width,
                               source=source))


# The fast "chars" encoder: the bytes of `reference_char_example`, 5x faster. The tags are
# pre-encoded: b"\x0a" is field 1, b"\x12" field 2, b"\x1a" field 3 (all length-delimited).


def _map_key(name: str) -> bytes:
    key = name.encode("utf-8")
    return b"\x0a" + _varint(len(key)) + key  # Features.feature map entry: field 1, the key


_CHAR_KEYS = {name: _map_key(name) for name in ("char", "height", "image", "label",
                                                "orig_height", "orig_width", "source", "width",
                                                "writer")}


def _bytes_entry(key: bytes, value: bytes) -> bytes:
    # map entry {key, value: Feature{bytes_list (field 1): BytesList{value (field 1)}}}
    return _ld(b"\x0a", key + _ld(b"\x12", _ld(b"\x0a", _ld(b"\x0a", value))))


def _int_entry(key: bytes, value: int) -> bytes:
    # map entry {key, value: Feature{int64_list (field 3): Int64List{packed value (field 1)}}}
    return _ld(b"\x0a", key + _ld(b"\x12", _ld(b"\x1a", _ld(b"\x0a", _varint(value)))))


def char_example(*, image: bytes, height: int, width: int, label: int, char: str, writer: str,
                 orig_height: int, orig_width: int, source: str) -> bytes:
    """A "chars" record: the bytes of `reference_char_example` (features in sorted key order)."""
    k = _CHAR_KEYS
    return _ld(b"\x0a", b"".join((
        _bytes_entry(k["char"], char.encode("utf-8")),
        _int_entry(k["height"], height),
        _bytes_entry(k["image"], image),
        _int_entry(k["label"], label),
        _int_entry(k["orig_height"], orig_height),
        _int_entry(k["orig_width"], orig_width),
        _bytes_entry(k["source"], source.encode("utf-8")),
        _int_entry(k["width"], width),
        _bytes_entry(k["writer"], writer.encode("utf-8")),
    )))


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
