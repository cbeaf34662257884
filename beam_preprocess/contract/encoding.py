"""A fast encoder for the "chars" records: byte-identical to `schema.char_example`, 5x faster.

`schema.encode_example` is the reference (generic, any feature dict). Encoding is a third of
the per-sample cost of preprocessing with it (about 40 µs of 120 µs), so the job uses this
specialization: the field layout of the nine "chars" features is fixed, keys are pre-encoded,
and only the values are encoded per sample (about 8 µs). `tests/test_pipeline_units.py`
checks that both give the same bytes, so `schema.py` stays the one definition of the format.
"""
from __future__ import annotations

_SMALL = [bytes((i,)) for i in range(128)]


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
    """A length-delimited field: tag byte, varint length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _key(name: str) -> bytes:
    key = name.encode("utf-8")
    return b"\x0a" + _varint(len(key)) + key  # Features.feature map entry: field 1, the key


_KEYS = {name: _key(name) for name in ("char", "height", "image", "label", "orig_height",
                                       "orig_width", "source", "width", "writer")}


def _bytes_entry(key: bytes, value: bytes) -> bytes:
    # map entry {key, value: Feature{bytes_list (field 1): BytesList{value (field 1)}}}
    return _ld(b"\x0a", key + _ld(b"\x12", _ld(b"\x0a", _ld(b"\x0a", value))))


def _int_entry(key: bytes, value: int) -> bytes:
    # map entry {key, value: Feature{int64_list (field 3): Int64List{packed value (field 1)}}}
    return _ld(b"\x0a", key + _ld(b"\x12", _ld(b"\x1a", _ld(b"\x0a", _varint(value)))))


def char_example(*, image: bytes, height: int, width: int, label: int, char: str, writer: str,
                 orig_height: int, orig_width: int, source: str) -> bytes:
    """Same arguments and bytes as `schema.char_example` (features in sorted key order)."""
    k = _KEYS
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
