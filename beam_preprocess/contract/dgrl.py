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

The format rules live here and nowhere else: `parse_header` / `read_header` own the page header
(the Beam job checks its inputs with them), `read_dgrl` the line records. Every size is checked
against the bytes left in the file before anything is sliced or allocated.

Damaged pages: with `resync=True` a damaged line record costs that line only. As in `gnt.py`,
the unreadable byte range becomes one `SkippedBytes` in `page.skipped` and reading carries on
at the next resync point: a well-formed line record with 1 to `MAX_RESYNC_CHARS` labels that
all decode, sides of at most `MAX_RESYNC_SIDE` pixels, followed by the end of the file or by a
well-formed line header. A well-formed line followed by neither is cut short when the next
resync point lies inside it (the line is skipped), else it is kept and the bytes after it are
skipped. Bytes after the last line, and lines the page header declares but the file lacks, are
reported as skipped too, so nothing is dropped silently. A page header that cannot be read
always raises.
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
from typing import BinaryIO, Iterable, Union

import numpy as np

from beam_preprocess.contract.errors import CasiaFormatError
from beam_preprocess.contract.fileio import open_binary
from beam_preprocess.contract.gnt import SkippedBytes, decode_code

UNKNOWN_CHAR = "\ufffd"  # stands in the text for a label no codec decodes (reported in problems)
FIXED_HEADER_BYTES = 36  # 4 size + 8 format code + 20 code type + 2 code length + 2 bpp
PAGE_FIELDS_BYTES = 12   # page height, page width, line count
MAX_HEADER_BYTES = 1 << 20  # a header (illustration included) beyond this is corruption
MIN_LINE_BYTES = 4 + 16 + 1  # character count, box, one pixel
MAX_RESYNC_CHARS = 1024  # resync points only: real lines hold a few dozen characters
MAX_RESYNC_SIDE = 1 << 15

_U32 = struct.Struct("<I")
_BOX = struct.Struct("<IIII")


@dataclasses.dataclass(frozen=True)
class DgrlLine:
    """One text line of a page.

    Attributes:
      text: the decoded label ("\\ufffd" where a code could not be decoded; see `problems`).
      codes: the raw label codes as stored, one bytes object per character.
      top, left: position of the line bitmap on the page.
      image: uint8 (height, width) bitmap, background 255.
      offset: byte offset of the line record in its file.
      index: 0-based position of the line among the lines read from the page.
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
class PageHeader:
    """The fixed part of a page; `lines_offset` is where the first line record starts."""
    header_size: int
    format_code: bytes
    illustration: str
    code_type: str
    code_length: int
    bits_per_pixel: int
    height: int
    width: int
    line_count: int
    lines_offset: int


@dataclasses.dataclass(frozen=True)
class DgrlPage:
    """A page as read: its header (page size, code length, the line count it declares...),
    the lines read, and with `resync` the byte ranges skipped."""
    path: str
    header: PageHeader
    lines: tuple
    skipped: tuple = ()   # SkippedBytes, only with read_dgrl(..., resync=True)


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


# === The page header ===


def header_size_problem(header_size: int, file_size: int | None) -> str | None:
    """Why a header size field is impossible, or None."""
    if header_size < FIXED_HEADER_BYTES or header_size > MAX_HEADER_BYTES:
        return (f"header size {header_size} is impossible (the fixed fields alone take "
                f"{FIXED_HEADER_BYTES} bytes; at most {MAX_HEADER_BYTES} are accepted)")
    if file_size is not None and header_size + PAGE_FIELDS_BYTES > file_size:
        return (f"truncated header: header size {header_size} + {PAGE_FIELDS_BYTES} bytes of "
                f"page fields, but the file holds {file_size} bytes")
    return None


def parse_header(data: bytes, name: str, file_size: int | None = None) -> PageHeader:
    """Parses a page header from the first bytes of a file: what makes a file a DGRL file
    (`read_dgrl` then checks the line count against the file size).

    Args:
      data: at least the header and the page fields (more is fine).
      name: the file, for errors.
      file_size: the file's size when `data` is not the whole file.

    Raises:
      CasiaFormatError: naming the file and the byte offset of the impossible field.
    """
    file_size = len(data) if file_size is None else file_size
    if len(data) < 4:
        raise CasiaFormatError(name, 0, f"truncated header size field: {len(data)} of 4 bytes")
    header_size, = _U32.unpack_from(data)
    problem = header_size_problem(header_size, file_size)
    if problem is not None:
        raise CasiaFormatError(name, 0, problem)
    lines_offset = header_size + PAGE_FIELDS_BYTES
    if len(data) < lines_offset:
        raise CasiaFormatError(name, len(data), f"truncated header: {len(data)} of "
                               f"{lines_offset} bytes")
    code_type = bytes(data[header_size - 24:header_size - 4])
    code_length, bits_per_pixel = struct.unpack_from("<HH", data, header_size - 4)
    if code_length not in (1, 2, 4):
        raise CasiaFormatError(name, header_size - 4, f"code length {code_length} is not 1, 2 or 4")
    if bits_per_pixel != 8:
        raise CasiaFormatError(name, header_size - 2,
                               f"{bits_per_pixel} bits per pixel is not supported (HWDB2.x uses 8)")
    height, width, line_count = struct.unpack_from("<III", data, header_size)
    illustration = bytes(data[12:header_size - 24]).split(b"\x00", 1)[0]
    return PageHeader(header_size, bytes(data[4:12]), illustration.decode("gbk", "replace"),
                      code_type.split(b"\x00", 1)[0].decode("ascii", "replace"), code_length,
                      bits_per_pixel, height, width, line_count, lines_offset)


def read_header(f: BinaryIO, name: str, file_size: int) -> PageHeader:
    """Reads and parses the page header from the start of `f` (reads the header only, never
    more than `file_size` bytes).

    Raises:
      CasiaFormatError: as `parse_header`.
    """
    head = f.read(min(4, file_size))
    if len(head) == 4:
        header_size, = _U32.unpack(head)
        if header_size_problem(header_size, file_size) is None:
            head += f.read(header_size + PAGE_FIELDS_BYTES - 4)
    return parse_header(head, name, file_size)


# === Line records ===


def _line_at(data: bytes, pos: int, code_length: int
             ) -> tuple[tuple | None, int, str]:
    """(fields, end, "") for a well-formed line record at `pos`, else (None, offset, problem).

    fields = (codes, top, left, height, width, pixels_offset)."""
    left = len(data) - pos
    if left < 4:
        return None, pos, f"truncated character count: {left} of 4 bytes"
    char_count, = _U32.unpack_from(data, pos)
    labels = char_count * code_length
    if labels + 16 > left - 4:
        return None, pos, (f"truncated labels: character count {char_count} needs "
                           f"{labels} bytes and a 16-byte box; {left - 4} bytes are left")
    codes = tuple(bytes(data[i:i + code_length])
                  for i in range(pos + 4, pos + 4 + labels, code_length))
    box = pos + 4 + labels
    top, left_px, height, width = _BOX.unpack_from(data, box)
    if height == 0 or width == 0:
        return None, box, f"zero line image size {width}x{height}"
    pixels = box + 16
    have = len(data) - pixels
    if height * width > have:
        return None, pixels, (f"truncated bitmap: {have} of {height * width} bytes for a "
                              f"{width}x{height} line")
    return (codes, top, left_px, height, width, pixels), pixels + height * width, ""


def _line_header_ok(data: bytes, pos: int, code_length: int) -> bool:
    """Whether a line record's header (count, labels, box) is whole and consistent at `pos`;
    its bitmap may be cut short (that is the next line's problem, not the previous one's)."""
    left = len(data) - pos
    if left < 4:
        return False
    char_count, = _U32.unpack_from(data, pos)
    box = pos + 4 + char_count * code_length
    if box + 16 > len(data):
        return False
    _, _, height, width = _BOX.unpack_from(data, box)
    return height > 0 and width > 0


def _is_resync_point(data: bytes, pos: int, code_length: int) -> bool:
    fields, end, _ = _line_at(data, pos, code_length)
    if fields is None:
        return False
    codes, _, _, height, width, _ = fields
    if not (1 <= len(codes) <= MAX_RESYNC_CHARS and height <= MAX_RESYNC_SIDE
            and width <= MAX_RESYNC_SIDE):
        return False
    if any(decode_label(c)[0] is None for c in codes):
        return False
    return end == len(data) or _line_header_ok(data, end, code_length)


def find_resync_point(data: bytes, start: int, code_length: int) -> int | None:
    """The first line resync point at or after `start`, or None."""
    count = len(data) - start - 3
    if count <= 0:
        return None
    b = np.frombuffer(data, np.uint8, count=len(data) - start, offset=start)
    # A character count of 1..MAX_RESYNC_CHARS has two zero high bytes: a cheap first filter.
    candidates = np.flatnonzero((b[2:count + 2] == 0) & (b[3:count + 3] == 0)
                                & (b[1:count + 1] < (MAX_RESYNC_CHARS >> 8) + 1))
    for k in candidates:
        if _is_resync_point(data, start + int(k), code_length):
            return start + int(k)
    return None


Source = Union[str, os.PathLike, BinaryIO]


def read_dgrl(source: Source, *, path: str | None = None, resync: bool = False) -> DgrlPage:
    """Reads a DGRL page with all its lines.

    Args:
      source: a path (local or any `tf.io.gfile` scheme) or a binary file object.
      path: name used in errors when `source` is a file object.
      resync: instead of raising at a damaged line record, describe the unreadable byte range
        in `page.skipped` and carry on at the next resync point (see the module docstring).
        A malformed page header always raises.

    Raises:
      CasiaFormatError: naming the file and byte offset of the malformed field.
    """
    if isinstance(source, (str, os.PathLike)):
        with open_binary(os.fspath(source)) as f:
            return _read_page(f.read(), path or os.fspath(source), resync)
    return _read_page(source.read(), path or getattr(source, "name", "<stream>"), resync)


def _read_page(data: bytes, name: str, resync: bool) -> DgrlPage:
    header = parse_header(data, name)
    cl, end_of_file = header.code_length, len(data)
    if header.line_count * MIN_LINE_BYTES > end_of_file - header.lines_offset:
        raise CasiaFormatError(name, header.header_size + 8,
                               f"line count {header.line_count} is impossible: "
                               f"{end_of_file - header.lines_offset} bytes follow the header, "
                               f"and a line takes at least {MIN_LINE_BYTES}")
    lines: list[DgrlLine] = []
    skipped: list[SkippedBytes] = []

    def skip(start: int, resume: int | None, reason: str) -> None:
        skipped.append(SkippedBytes(name, start, end_of_file if resume is None else resume,
                                    reason, resume is None))

    pos = header.lines_offset
    while pos < end_of_file and (resync or len(lines) < header.line_count):
        fields, end, problem = _line_at(data, pos, cl)
        where = f"line {len(lines) + len(skipped)} of {header.line_count}"
        if fields is None:
            if not resync:
                raise CasiaFormatError(name, end, problem)
            resume = find_resync_point(data, pos + 1, cl)
            skip(pos, resume, f"{where}: {problem} (at byte {end})")
            if resume is None:
                break
            pos = resume
            continue
        line = _make_line(data, pos, fields, len(lines))
        if not resync or end == end_of_file or _line_header_ok(data, end, cl):
            lines.append(line)
            pos = end
            continue
        _, at, follow = _line_at(data, end, cl)
        resume = find_resync_point(data, pos + 1, cl)
        if resume is not None and resume < end:
            skip(pos, resume, f"{where}: a {line.image.shape[1]}x{line.image.shape[0]} line cut "
                              f"short: followed by {follow} (at byte {at}), and the next "
                              f"well-formed line starts at byte {resume}, inside it")
        else:
            lines.append(line)
            skip(end, resume, f"after {where}: {follow} (at byte {at})")
            if resume is None:
                break
        pos = resume
    if not resync and len(lines) < header.line_count:
        raise CasiaFormatError(name, pos, f"truncated page: {len(lines)} of "
                               f"{header.line_count} lines")
    if resync and not skipped and len(lines) < header.line_count:
        skip(end_of_file, None, f"the page header declares {header.line_count} lines; the "
                                f"file ends after {len(lines)}")
    return DgrlPage(name, header, tuple(lines), tuple(skipped))


def _make_line(data: bytes, pos: int, fields: tuple, index: int) -> DgrlLine:
    codes, top, left, height, width, pixels = fields
    chars, problems = [], []
    for position, code in enumerate(codes):
        char, problem = decode_label(code)
        if problem:
            problems.append(f"character {position}: {problem}")
        chars.append(char if char is not None else UNKNOWN_CHAR)
    image = np.frombuffer(data, np.uint8, count=height * width, offset=pixels)
    return DgrlLine("".join(chars), codes, top, left, image.reshape(height, width), pos, index,
                    tuple(problems))


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
