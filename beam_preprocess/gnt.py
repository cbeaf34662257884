"""CASIA-HWDB1.x `.gnt` files: isolated handwritten characters.

Layout of one sample (little-endian)::

    uint32 sample_size   # == 10 + width * height
    2 bytes tag_code     # GB code in file order (high byte first); b"X\\x00" for ASCII symbols
    uint16 width
    uint16 height
    width*height uint8   # row-major bitmap, background 255

The reader streams: it reads the 10-byte header with `struct` and the bitmap with one
`np.frombuffer`, so no Python code runs per pixel.
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
from typing import BinaryIO, Iterable, Iterator, Union

import numpy as np

from beam_preprocess.errors import CasiaFormatError
from beam_preprocess.fileio import open_binary

HEADER = struct.Struct("<I2sHH")
HEADER_SIZE = HEADER.size  # 10

# GB2312 is tried first because it is what HWDB1.x declares; GBK and GB18030 then cover the
# level-2, GBK-only and vendor codes real files contain.
CODECS = ("gb2312", "gbk", "gb18030")


@dataclasses.dataclass(frozen=True)
class GntSample:
    """One character sample.

    Attributes:
      char: the decoded character, or None when the code could not be decoded (see `problem`).
      code: the raw 2-byte tag code as stored in the file.
      image: uint8 array of shape (height, width), background 255.
      offset: byte offset of the sample's header in its file.
      path: the file the sample came from.
      index: 0-based position of the sample in its file.
      problem: None, or why `char` is None.
    """
    char: str | None
    code: bytes
    image: np.ndarray
    offset: int
    path: str
    index: int
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class BadTail:
    """What `read_gnt(..., skip_bad_tail=True)` yields instead of raising: the unreadable rest."""
    path: str
    offset: int
    reason: str
    bytes_skipped: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def decode_code(code: bytes) -> tuple[str | None, str | None]:
    """Decodes a 2-byte GNT tag code.

    Returns:
      (char, None) on success, (None, reason) when no codec decodes it to one character.
    """
    if len(code) == 2 and code[1] == 0 and code[0] != 0:
        # Single-byte symbol codes (digits, Latin, punctuation) are stored as (byte, 0).
        if code[0] < 0x80:
            return chr(code[0]), None
        return None, f"undecodable single-byte code 0x{code[0]:02X}"
    for codec in CODECS:
        try:
            text = code.decode(codec)
        except UnicodeDecodeError:
            continue
        if len(text) == 1:
            return text, None
    return None, f"undecodable code 0x{code.hex().upper()}"


def encode_char(char: str) -> bytes:
    """Encodes a character as a 2-byte GNT tag code (inverse of `decode_code`).

    Raises:
      ValueError: the character has no 2-byte GBK code (or is not one character).
    """
    if len(char) != 1:
        raise ValueError(f"a GNT tag code holds one character. Received: {char!r}")
    if ord(char) < 0x80:
        return bytes([ord(char), 0])
    try:
        code = char.encode("gbk")
    except UnicodeEncodeError:
        code = b""
    if len(code) != 2:
        raise ValueError(f"character {char!r} (U+{ord(char):04X}) has no 2-byte GBK code")
    return code


Source = Union[str, os.PathLike, BinaryIO]


def read_gnt(source: Source, *, path: str | None = None,
             skip_bad_tail: bool = False) -> Iterator[GntSample | BadTail]:
    """Streams the samples of a GNT file.

    Args:
      source: a path (local or any `tf.io.gfile` scheme) or a binary file object.
      path: name used in errors and samples when `source` is a file object.
      skip_bad_tail: instead of raising on a malformed record, yield one `BadTail` describing the
        unreadable rest of the file (from the bad record to the end) and stop.

    Yields:
      `GntSample`s in file order (and at most one final `BadTail` with `skip_bad_tail`).

    Raises:
      CasiaFormatError: a truncated header or bitmap, a size field that is not 10 + w*h, or a
        zero width or height; the error names the file and the byte offset of the record.
    """
    if isinstance(source, (str, os.PathLike)):
        name = path or os.fspath(source)
        with open_binary(os.fspath(source)) as f:
            yield from _read_stream(f, name, skip_bad_tail)
    else:
        yield from _read_stream(source, path or getattr(source, "name", "<stream>"),
                                skip_bad_tail)


def _read_stream(f: BinaryIO, name: str, skip_bad_tail: bool) -> Iterator[GntSample | BadTail]:
    offset = 0
    index = 0
    while True:
        header = f.read(HEADER_SIZE)
        if not header:
            return
        consumed = len(header)
        try:
            if len(header) < HEADER_SIZE:
                raise CasiaFormatError(
                    name, offset, f"truncated header: {len(header)} of {HEADER_SIZE} bytes")
            size, code, width, height = HEADER.unpack(header)
            if width == 0 or height == 0:
                raise CasiaFormatError(name, offset, f"zero image size {width}x{height}")
            if size != HEADER_SIZE + width * height:
                raise CasiaFormatError(
                    name, offset, f"sample size field {size} != 10 + {width}*{height} "
                    f"= {HEADER_SIZE + width * height}")
            pixels = f.read(width * height)
            consumed += len(pixels)
            if len(pixels) < width * height:
                raise CasiaFormatError(
                    name, offset, f"truncated bitmap: {len(pixels)} of {width * height} bytes "
                    f"for a {width}x{height} image")
        except CasiaFormatError as err:
            if not skip_bad_tail:
                raise
            yield BadTail(name, offset, err.reason, consumed + len(f.read()))
            return
        char, problem = decode_code(code)
        image = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width)
        yield GntSample(char, code, image, offset, name, index, problem)
        offset += size
        index += 1


def write_gnt(dest: Union[str, os.PathLike, BinaryIO],
              samples: Iterable[tuple[Union[str, bytes], np.ndarray]]) -> int:
    """Writes samples in GNT layout, byte-exact with `read_gnt`.

    Args:
      dest: a path (local or any `tf.io.gfile` scheme) or a binary file object.
      samples: (character or raw 2-byte code, uint8 HxW image with background 255) pairs.

    Returns:
      The number of samples written.
    """
    if isinstance(dest, (str, os.PathLike)):
        with open_binary(os.fspath(dest), "wb") as f:
            return write_gnt(f, samples)
    count = 0
    for char_or_code, image in samples:
        code = char_or_code if isinstance(char_or_code, bytes) else encode_char(char_or_code)
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 2 or 0 in image.shape:
            raise ValueError(f"images must be non-empty 2-D uint8 arrays. Received shape "
                             f"{image.shape}")
        height, width = image.shape
        if width > 0xFFFF or height > 0xFFFF:
            raise ValueError(f"GNT images are at most 65535 pixels a side. Received "
                             f"{width}x{height}")
        dest.write(HEADER.pack(HEADER_SIZE + width * height, code, width, height))
        dest.write(image.tobytes())
        count += 1
    return count


def gnt_bytes(samples: Iterable[tuple[Union[str, bytes], np.ndarray]]) -> bytes:
    """The GNT encoding of `samples` as bytes (handy for tests and in-memory pipelines)."""
    buffer = io.BytesIO()
    write_gnt(buffer, samples)
    return buffer.getvalue()
