"""CASIA-HWDB1.x `.gnt` files: isolated handwritten characters.

Layout of one sample (little-endian)::

    uint32 sample_size   # == 10 + width * height
    2 bytes tag_code     # GB code in file order (high byte first); b"X\\x00" for ASCII symbols
    uint16 width
    uint16 height
    width*height uint8   # row-major bitmap, background 255

The reader streams through a bounded look-ahead window: it reads the 10-byte header with
`struct` and the bitmap with one `np.frombuffer`, so no Python code runs per pixel. Sizes are
checked before anything is read: no read asks for more than the bytes left in the file (or
`MAX_READ` when the stream cannot tell its size), so a header declaring 65535 x 65535 in a
110-byte file costs nothing.

The format rules live here and nowhere else (the Beam job and `hccr-inspect` call them):

- A header is *consistent* (`header_problem`) when width and height are non-zero and
  sample_size == 10 + width * height. A record is *well-formed* when its header is consistent
  and its bitmap lies inside the file.
- A *resync point* (`is_resync_point`) is stricter, because it is found by searching after
  damage: a well-formed record whose sides are at most `MAX_SIDE` pixels, whose tag code
  decodes, and which ends at the end of the file or where a consistent header starts.

With `resync=True` a damaged record never costs the rest of the file. The reader yields one
`SkippedBytes` (file, start offset, end offset, reason) for each unreadable byte range and
carries on at the next resync point:

- a record that is not well-formed (wrong size field, zero width or height, a bitmap past the
  end of the file, a header cut short) is skipped from its header to the next resync point;
- a well-formed record that is not followed by a consistent header (nor the end of the file) is
  either cut short, when the next resync point lies inside it (the record is skipped up to
  there), or intact with garbage after it (the record is kept and the garbage skipped);
- with no resync point left, the range runs to the end of the file (`at_end`).

So the damaged record is lost, and at most the one record its damage overlaps; every other
sample before and after is read.
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
from typing import BinaryIO, Iterable, Iterator, Union

import numpy as np

from beam_preprocess.contract.errors import CasiaFormatError
from beam_preprocess.contract.fileio import open_binary

HEADER = struct.Struct("<I2sHH")
HEADER_SIZE = HEADER.size  # 10

# GB2312 is tried first because it is what HWDB1.x declares; GBK and GB18030 then cover the
# level-2, GBK-only and vendor codes real files contain.
CODECS = ("gb2312", "gbk", "gb18030")

# Largest side of a record accepted as a resync point. Real HWDB1.x samples are 20 to 250
# pixels a side (the shared sample); 1024 leaves room and bounds the look-ahead of a search
# to about 1 MiB. Records read in file order are not limited by it.
MAX_SIDE = 1024
MAX_READ = 1 << 22  # one read call asks for at most 4 MiB
_CHUNK = 1 << 16    # reads ask for at least 64 KiB (fewer, larger reads)
_SCAN_BLOCK = 1 << 16


@dataclasses.dataclass(frozen=True)
class GntSample:
    """One character sample.

    Attributes:
      char: the decoded character, or None when the code could not be decoded (see `problem`).
      code: the raw 2-byte tag code as stored in the file.
      image: uint8 array of shape (height, width), background 255.
      offset: byte offset of the sample's header in its file.
      path: the file the sample came from.
      index: 0-based position of the sample among the samples read from its file.
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
class SkippedBytes:
    """A byte range of a GNT or DGRL file that holds no readable record (one reject).

    Attributes:
      path: the file.
      offset: first skipped byte.
      end: first byte after the range (the next well-formed record, or the file size).
      reason: what is wrong at `offset`.
      at_end: the range runs to the end of the file: no well-formed record follows it.
    """
    path: str
    offset: int
    end: int
    reason: str
    at_end: bool

    @property
    def bytes_skipped(self) -> int:
        return self.end - self.offset

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "bytes_skipped": self.bytes_skipped}


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


def header_problem(size: int, width: int, height: int) -> str | None:
    """Why a sample header is not consistent, or None when it is."""
    if width == 0 or height == 0:
        return f"zero image size {width}x{height}"
    if size != HEADER_SIZE + width * height:
        return (f"sample size field {size} != 10 + {width}*{height} = "
                f"{HEADER_SIZE + width * height}")
    return None


def start_problem(head: bytes, file_size: int | None = None) -> str | None:
    """Why `head` (the first bytes of a file) does not look like GNT data, or None.

    GNT data starts with a consistent header, or (a damaged first record) holds a resync point
    within `head`. An empty file holds no samples and is fine.
    """
    if not head:
        return None
    if len(head) < HEADER_SIZE:
        return f"{len(head)} bytes, shorter than one sample header"
    size, _, width, height = HEADER.unpack_from(head)
    problem = header_problem(size, width, height)
    if problem is None:
        return None
    window = _Window(io.BytesIO(head), len(head))
    if find_resync_point(window, 1) is not None:
        return None
    return f"its first record's {problem}, and no well-formed record follows in its first " \
           f"{len(head)} bytes"


# === Reading ===


class _Window:
    """The bytes of a stream from offset `base` on, read ahead in bounded chunks on demand."""

    def __init__(self, f: BinaryIO, size: int | None):
        self.f = f
        self.size = size   # total bytes when the stream can tell, else None
        self.buf = bytearray()
        self.base = 0
        self.eof = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def fill(self, upto: int) -> int:
        """Loads bytes up to offset `upto` (fewer at the end of the file); returns the offset
        loaded up to. Never asks the stream for more than the bytes left (or `MAX_READ`)."""
        if upto <= self.base + len(self.buf):
            return upto  # the common case, first
        if self.size is not None:
            upto = min(upto, self.size)
        while self.end < upto and not self.eof:
            want = max(upto - self.end, _CHUNK)
            if self.size is not None:
                want = min(want, self.size - self.end)
            chunk = self.f.read(min(want, MAX_READ))
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
        return min(self.end, upto)

    def at_end(self, pos: int) -> bool:
        """True when `pos` is the end of the file."""
        if pos < self.base + len(self.buf):
            return False
        return self.fill(pos + 1) == pos and (self.eof or self.size == pos)

    def bytes_left(self, pos: int, needed: int) -> int:
        """Bytes from `pos` on, loading at most `needed` of them (checked against the file size
        first, when known, so an impossible size reads nothing)."""
        if self.size is not None and pos + needed > self.size:
            return max(0, self.size - pos)
        return self.fill(pos + needed) - pos

    def get(self, start: int, stop: int) -> bytes:
        with memoryview(self.buf) as view:
            return bytes(view[start - self.base:stop - self.base])

    def header(self, pos: int) -> tuple:
        """(size, code, width, height) at `pos`; the caller has loaded the 10 bytes."""
        return HEADER.unpack_from(self.buf, pos - self.base)

    def pixels(self, pos: int, height: int, width: int) -> np.ndarray:
        """A read-only (height, width) copy of the loaded bitmap at `pos`."""
        image = np.frombuffer(self.buf, np.uint8, height * width, pos - self.base).copy()
        image.flags.writeable = False
        return image.reshape(height, width)

    def release(self, pos: int) -> None:
        """Forgets the bytes before `pos` (in large steps: a memmove per record is slow)."""
        if pos - self.base >= _CHUNK * 4:
            del self.buf[:pos - self.base]
            self.base = pos


def _file_size(f: BinaryIO) -> int | None:
    try:
        if not f.seekable():
            return None
        here = f.tell()
        f.seek(0, io.SEEK_END)
        size = f.tell()
        f.seek(here)
        return size - here
    except (OSError, AttributeError, TypeError, ValueError):
        return None


def _record_at(window: _Window, pos: int) -> tuple[tuple | None, str | None]:
    """((size, code, width, height), None) for a well-formed record at `pos`, else
    (None, problem)."""
    have = window.fill(pos + HEADER_SIZE) - pos
    if have < HEADER_SIZE:
        return None, f"truncated header: {have} of {HEADER_SIZE} bytes"
    size, code, width, height = window.header(pos)
    problem = header_problem(size, width, height)
    if problem is not None:
        return None, problem
    pixels = window.bytes_left(pos + HEADER_SIZE, width * height)
    if pixels < width * height:
        return None, (f"truncated bitmap: {pixels} of {width * height} bytes for a "
                      f"{width}x{height} image")
    return (size, code, width, height), None


def _consistent_header_at(window: _Window, pos: int) -> bool:
    if window.fill(pos + HEADER_SIZE) - pos < HEADER_SIZE:
        return False
    size, _, width, height = window.header(pos)
    return width > 0 and height > 0 and size == HEADER_SIZE + width * height


def _follow_problem(window: _Window, pos: int) -> str:
    """What is wrong with the bytes at `pos`, where a header should start."""
    _, problem = _record_at(window, pos)
    return problem or "a well-formed record that is not a resync point"


def is_resync_point(window: _Window, pos: int) -> bool:
    """Whether a record read after damage may start at `pos` (see the module docstring)."""
    if window.fill(pos + HEADER_SIZE) - pos < HEADER_SIZE:
        return False
    size, code, width, height = window.header(pos)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE
            and size == HEADER_SIZE + width * height):
        return False
    if decode_code(code)[0] is None:
        return False
    end = pos + size
    if window.fill(end) < end:
        return False
    return window.at_end(end) or _consistent_header_at(window, end)


def find_resync_point(window: _Window, start: int) -> int | None:
    """The first resync point at or after `start`, or None (the window then holds the end of
    the file). Forgets the bytes it has searched."""
    pos = start
    while True:
        window.release(pos)
        loaded = window.fill(pos + _SCAN_BLOCK + HEADER_SIZE - 1)
        count = loaded - HEADER_SIZE + 1 - pos  # positions holding a whole header
        if count <= 0:
            window.fill(pos + HEADER_SIZE)  # reach the end of the file
            return None
        b = np.frombuffer(window.get(pos, loaded), np.uint8).astype(np.uint64)
        size = b[0:count] | b[1:count + 1] << 8 | b[2:count + 2] << 16 | b[3:count + 3] << 24
        width = b[6:count + 6] | b[7:count + 7] << 8
        height = b[8:count + 8] | b[9:count + 9] << 8
        candidates = np.flatnonzero((width >= 1) & (width <= MAX_SIDE) & (height >= 1)
                                    & (height <= MAX_SIDE)
                                    & (size == HEADER_SIZE + width * height))
        for k in candidates:
            if is_resync_point(window, pos + int(k)):
                return pos + int(k)
        pos += count


Source = Union[str, os.PathLike, BinaryIO]


def read_gnt(source: Source, *, path: str | None = None,
             resync: bool = False) -> Iterator[GntSample | SkippedBytes]:
    """Streams the samples of a GNT file.

    Args:
      source: a path (local or any `tf.io.gfile` scheme) or a binary file object (read from
        its current position; offsets count from there).
      path: name used in errors and samples when `source` is a file object.
      resync: instead of raising at a damaged record, yield a `SkippedBytes` for the
        unreadable range and carry on at the next resync point (see the module docstring).

    Yields:
      `GntSample`s in file order (and `SkippedBytes` between them with `resync`).

    Raises:
      CasiaFormatError: (without `resync`) a truncated header or bitmap, a size field that is
        not 10 + w*h, or a zero width or height; the error names the file and the byte offset
        of the record.
    """
    if isinstance(source, (str, os.PathLike)):
        name = path or os.fspath(source)
        with open_binary(os.fspath(source)) as f:
            yield from _read_stream(f, name, resync)
    else:
        yield from _read_stream(source, path or getattr(source, "name", "<stream>"), resync)


def _read_stream(f: BinaryIO, name: str, resync: bool) -> Iterator[GntSample | SkippedBytes]:
    window = _Window(f, _file_size(f))
    pos = index = 0
    while not window.at_end(pos):
        window.release(pos)
        record, problem = _record_at(window, pos)
        if record is None:
            if not resync:
                raise CasiaFormatError(name, pos, problem)
            resume = find_resync_point(window, pos + 1)
            yield _skipped(name, pos, resume, window, problem)
            if resume is None:
                return
            pos = resume
            continue
        size, code, width, height = record
        end = pos + size
        sample = _sample(window, pos, record, name, index)
        if not resync or window.at_end(end) or _consistent_header_at(window, end):
            yield sample
            index += 1
            pos = end
            continue
        # A well-formed record followed by bytes that are not a header: cut short, or intact
        # with garbage after it? The next resync point tells.
        problem = _follow_problem(window, end)
        resume = find_resync_point(window, pos + 1)
        if resume is not None and resume < end:
            yield SkippedBytes(name, pos, resume,
                               f"a {width}x{height} sample cut short: it is followed by "
                               f"{problem} at byte {end}, and the next well-formed record "
                               f"starts at byte {resume}, inside it", False)
        else:
            yield sample
            index += 1
            yield _skipped(name, end, resume, window, problem)
            if resume is None:
                return
        pos = resume


def _sample(window: _Window, pos: int, record: tuple, name: str, index: int) -> GntSample:
    size, code, width, height = record
    char, problem = decode_code(code)
    return GntSample(char, code, window.pixels(pos + HEADER_SIZE, height, width), pos, name,
                     index, problem)


def _skipped(name: str, start: int, resume: int | None, window: _Window,
             problem: str) -> SkippedBytes:
    if resume is not None:
        return SkippedBytes(name, start, resume, problem, False)
    return SkippedBytes(name, start, max(start, window.end), problem, True)


def read_codes(source: Source, *, path: str | None = None) -> Iterator[str]:
    """The decodable characters of a GNT file in file order, read with `resync`."""
    for item in read_gnt(source, path=path, resync=True):
        if isinstance(item, GntSample) and item.char is not None:
            yield item.char


# === Writing ===


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
