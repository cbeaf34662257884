"""CASIA-HWDB2.x `.dgrl` files: one page of handwritten text lines per file.

Layout (little-endian)::

    uint32 header_size                 # the header is variable: always read this field
    8 bytes format code                # e.g. b"DGRL"; real files vary, so it is not checked
    header_size - 36 bytes illustration
    20 bytes code type                 # "ASCII", "GB", "GB18030", ... (NUL padded)
    uint16 code_length                 # bytes per character label: 1, 2 or 4
    uint16 bits_per_pixel              # 8 in every HWDB2.x release
    uint32 page_height, uint32 page_width, uint32 line_count
    per line:
      uint32 char_count
      char_count * code_length bytes   # labels, each in file byte order
      uint32 top, left, height, width
      height * width uint8             # line bitmap, background 255
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
from typing import BinaryIO, Iterable, Union

import numpy as np

from beam_preprocess.errors import CasiaFormatError
from beam_preprocess.fileio import open_binary
from beam_preprocess.gnt import BadTail, decode_code

UNKNOWN_CHAR = "\ufffd"  # stands in the text for a label no codec decodes (reported in problems)
FIXED_HEADER_BYTES = 36  # 4 size + 8 format code + 20 code type + 2 code length + 2 bpp
MAX_REASONABLE = 1 << 20  # counts beyond this are corruption, not handwriting


@dataclasses.dataclass(frozen=True)
class DgrlLine:
    """One text line of a page.

    Attributes:
      text: the decoded label ("\\ufffd" where a code could not be decoded; see `problems`).
      codes: the raw label codes as stored, one bytes object per character.
      top, left: position of the line bitmap on the page.
      image: uint8 (height, width) bitmap, background 255.
      offset: byte offset of the line record in its file.
      index: 0-based line number on the page.
      problems: human-readable problems with this line's labels (empty when clean).
    """
    text: str
    codes: tuple
    top: int
    left: int
    image: np.ndarray
    offset: int
    index: int
    problems: tuple = ()


@dataclasses.dataclass(frozen=True)
class DgrlPage:
    path: str
    format_code: bytes
    illustration: str
    code_type: str
    code_length: int
    bits_per_pixel: int
    height: int
    width: int
    lines: tuple
    bad_tail: BadTail | None = None  # set only with read_dgrl(..., skip_bad_tail=True)


def decode_label(code: bytes) -> tuple[str | None, str | None]:
    """Decodes one DGRL label of 1, 2 or 4 bytes; returns (char, None) or (None, reason)."""
    if len(code) == 1:
        if 0 < code[0] < 0x80:
            return chr(code[0]), None
        return None, f"undecodable 1-byte code 0x{code.hex().upper()}"
    if len(code) == 4:
        stripped = code.rstrip(b"\x00")
        if len(stripped) <= 2:
            return decode_label(stripped.ljust(2, b"\x00") if len(stripped) == 1 else stripped)
        try:
            text = code.decode("gb18030")
        except UnicodeDecodeError:
            return None, f"undecodable code 0x{code.hex().upper()}"
        if len(text) == 1:
            return text, None
        return None, f"undecodable code 0x{code.hex().upper()}"
    return decode_code(code)


def encode_label(char: str, code_length: int) -> bytes:
    """Encodes one character as a `code_length`-byte DGRL label (inverse of `decode_label`)."""
    if code_length == 1:
        if ord(char) >= 0x80:
            raise ValueError(f"code length 1 holds ASCII only. Received: {char!r}")
        return char.encode("ascii")
    code = char.encode("ascii") if ord(char) < 0x80 else char.encode("gb18030")
    if len(code) > code_length:
        raise ValueError(f"{char!r} needs {len(code)} bytes; code length is {code_length}")
    return code.ljust(code_length, b"\x00")


class _Reader:
    def __init__(self, f: BinaryIO, name: str):
        self.f, self.name, self.offset = f, name, 0

    def take(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) < n:
            raise CasiaFormatError(self.name, self.offset,
                                   f"truncated {what}: {len(data)} of {n} bytes")
        self.offset += n
        return data

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]


Source = Union[str, os.PathLike, BinaryIO]


def read_dgrl(source: Source, *, path: str | None = None,
              skip_bad_tail: bool = False) -> DgrlPage:
    """Reads a DGRL page with all its lines.

    Args:
      source: a path (local or any `tf.io.gfile` scheme) or a binary file object.
      path: name used in errors when `source` is a file object.
      skip_bad_tail: on a malformed line record, keep the lines read so far and describe the rest
        in `page.bad_tail` instead of raising. A malformed file header always raises.

    Raises:
      CasiaFormatError: naming the file and byte offset of the malformed field.
    """
    if isinstance(source, (str, os.PathLike)):
        with open_binary(os.fspath(source)) as f:
            return _read_page(f, path or os.fspath(source), skip_bad_tail)
    return _read_page(source, path or getattr(source, "name", "<stream>"), skip_bad_tail)


def _read_page(f: BinaryIO, name: str, skip_bad_tail: bool) -> DgrlPage:
    r = _Reader(f, name)
    header_size = r.u32("header size field")
    if header_size < FIXED_HEADER_BYTES or header_size > MAX_REASONABLE:
        raise CasiaFormatError(name, 0, f"header size {header_size} is impossible (the fixed "
                               f"fields alone take {FIXED_HEADER_BYTES} bytes)")
    format_code = r.take(8, "format code")
    illustration = r.take(header_size - FIXED_HEADER_BYTES, "illustration")
    code_type = r.take(20, "code type").split(b"\x00", 1)[0].decode("ascii", "replace")
    code_length, bits_per_pixel = struct.unpack("<HH", r.take(4, "code length / bits per pixel"))
    if code_length not in (1, 2, 4):
        raise CasiaFormatError(name, header_size - 4, f"code length {code_length} is not 1, 2 or 4")
    if bits_per_pixel != 8:
        raise CasiaFormatError(name, header_size - 2,
                               f"{bits_per_pixel} bits per pixel is not supported (HWDB2.x uses 8)")
    page_offset = r.offset
    page_height, page_width, line_count = struct.unpack("<III", r.take(12, "page header"))
    if line_count > MAX_REASONABLE:
        raise CasiaFormatError(name, page_offset, f"line count {line_count} is impossible")
    lines: list[DgrlLine] = []
    bad_tail = None
    for index in range(line_count):
        line_offset = r.offset
        try:
            lines.append(_read_line(r, index, code_length))
        except CasiaFormatError as err:
            if not skip_bad_tail:
                raise
            rest = len(f.read())
            bad_tail = BadTail(name, line_offset,
                               f"line {index} of {line_count}: {err.reason} (at byte "
                               f"{err.offset})", r.offset - line_offset + rest)
            break
    return DgrlPage(name, format_code, illustration.split(b"\x00", 1)[0].decode("gbk", "replace"),
                    code_type, code_length, bits_per_pixel, page_height, page_width,
                    tuple(lines), bad_tail)


def _read_line(r: _Reader, index: int, code_length: int) -> DgrlLine:
    offset = r.offset
    char_count = r.u32("character count")
    if char_count > MAX_REASONABLE:
        raise CasiaFormatError(r.name, offset, f"character count {char_count} is impossible")
    raw = r.take(char_count * code_length, f"labels of {char_count} characters")
    codes = tuple(raw[i:i + code_length] for i in range(0, len(raw), code_length))
    chars, problems = [], []
    for position, code in enumerate(codes):
        char, problem = decode_label(code)
        if problem:
            problems.append(f"character {position}: {problem}")
        chars.append(char if char is not None else UNKNOWN_CHAR)
    box_offset = r.offset
    top, left, height, width = struct.unpack("<IIII", r.take(16, "line position and size"))
    if height == 0 or width == 0:
        raise CasiaFormatError(r.name, box_offset, f"zero line image size {width}x{height}")
    if height * width > MAX_REASONABLE * 64:
        raise CasiaFormatError(r.name, box_offset, f"line image {width}x{height} is impossible")
    pixels = r.take(height * width, f"bitmap of a {width}x{height} line")
    image = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width)
    return DgrlLine("".join(chars), codes, top, left, image, offset, index, tuple(problems))


def write_dgrl(dest: Union[str, os.PathLike, BinaryIO], *, page_height: int, page_width: int,
               lines: Iterable[tuple[str, int, int, np.ndarray]], code_length: int = 2,
               code_type: str = "GB", format_code: bytes = b"DGRL",
               illustration: str = "hccr synthetic page") -> int:
    """Writes one DGRL page, byte-exact with `read_dgrl`.

    Args:
      lines: (text, top, left, uint8 HxW image with background 255) per line.

    Returns:
      The number of lines written.
    """
    if isinstance(dest, (str, os.PathLike)):
        buffer = io.BytesIO()
        count = write_dgrl(buffer, page_height=page_height, page_width=page_width, lines=lines,
                           code_length=code_length, code_type=code_type,
                           format_code=format_code, illustration=illustration)
        with open_binary(os.fspath(dest), "wb") as f:
            f.write(buffer.getvalue())
        return count
    lines = list(lines)
    ill = illustration.encode("gbk") + b"\x00"
    dest.write(struct.pack("<I", FIXED_HEADER_BYTES + len(ill)))
    dest.write(format_code[:8].ljust(8, b"\x00"))
    dest.write(ill)
    dest.write(code_type.encode("ascii")[:20].ljust(20, b"\x00"))
    dest.write(struct.pack("<HH", code_length, 8))
    dest.write(struct.pack("<III", page_height, page_width, len(lines)))
    for text, top, left, image in lines:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        dest.write(struct.pack("<I", len(text)))
        dest.write(b"".join(encode_label(c, code_length) for c in text))
        dest.write(struct.pack("<IIII", top, left, image.shape[0], image.shape[1]))
        dest.write(image.tobytes())
    return len(lines)
