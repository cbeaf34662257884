"""Character sets: GB2312 level 1 (the 3755 HCCR classes), all of GB2312 for text lines,
files, and sets built from data.

Named sets (`Charset.named`):

==================  =======  ===============================================================
name                classes  what
==================  =======  ===============================================================
``gb2312-1``           3755  GB2312 level 1 in code order: the HCCR classes of HWDB1.x
``gb2312``             6763  GB2312 levels 1 and 2 (all its hanzi) in code order
``gb2312+lines``       7541  ``gb2312``, then `LINE_SYMBOLS`, then the rest of GB2312's 682
                             symbols (rows 0xA1-0xA9): every character a GB2312-coded HWDB2.x
                             line can hold. The default of ``hccr-preprocess --task lines``.
``gb2312-1+lines``     3876  ``gb2312-1`` plus `LINE_SYMBOLS` (the earlier line default)
==================  =======  ===============================================================

A charset file is UTF-8 text with one character per line, in class order: line i is class i.
Preprocessing writes it next to the shards; training, evaluation and export read it, so the class
count always comes from the data, never from a constant.
"""
from __future__ import annotations

import collections
import hashlib
import os
import string
from typing import Iterable, Sequence

from beam_preprocess.contract.fileio import open_binary

GB2312_LEVEL1_SIZE = 3755
GB2312_HANZI_SIZE = 6763    # levels 1 and 2
GB2312_SYMBOLS_SIZE = 682   # rows 0xA1-0xA9

# Symbols that occur in HWDB2.x text lines besides Chinese characters: digits, Latin letters and
# ASCII punctuation, plus the full-width CJK punctuation of the GB2312 symbol rows.
LINE_SYMBOLS = (string.digits + string.ascii_letters + string.punctuation +
                "，。、；：？！“”‘’（）《》〈〉【】「」『』…—～·")


def _gb2312_rows(first: int, last: int, expected: int, what: str) -> list[str]:
    """The characters of GB2312 rows `first`..`last` in code order (cells 0xA1-0xFE)."""
    chars = []
    for row in range(first, last + 1):
        for cell in range(0xA1, 0xFF):
            try:
                chars.append(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:
                continue  # unassigned cells, e.g. 0xD7FA-0xD7FE
    if len(chars) != expected:
        raise RuntimeError(f"Python's gb2312 codec gave {len(chars)} {what}, expected "
                           f"{expected}")
    return chars


def gb2312_level1() -> list[str]:
    """The 3755 GB2312 level-1 characters in code order (rows 0xB0-0xD7)."""
    return _gb2312_rows(0xB0, 0xD7, GB2312_LEVEL1_SIZE, "level-1 characters")


def gb2312_hanzi() -> list[str]:
    """The 6763 GB2312 level-1 and level-2 characters in code order (rows 0xB0-0xF7)."""
    return _gb2312_rows(0xB0, 0xF7, GB2312_HANZI_SIZE, "hanzi")


def gb2312_symbols() -> list[str]:
    """The 682 GB2312 non-hanzi characters in code order (rows 0xA1-0xA9): full-width
    punctuation, digits and letters, kana, Greek, Cyrillic, pinyin, box drawing."""
    return _gb2312_rows(0xA1, 0xA9, GB2312_SYMBOLS_SIZE, "symbols")


def _with_symbols(base: list[str], *extra: Iterable[str]) -> list[str]:
    seen, chars = set(base), list(base)
    for group in extra:
        for c in group:
            if c not in seen:
                seen.add(c)
                chars.append(c)
    return chars


class Charset:
    """An ordered set of characters; class id i is `chars[i]`."""

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        for c in chars:
            if len(c) != 1 or c in "\n\r":
                raise ValueError(f"a charset holds single, non-newline characters. Received: {c!r}")
        if len(set(chars)) != len(chars):
            dups = sorted(c for c, n in collections.Counter(chars).items() if n > 1)
            raise ValueError(f"charset has duplicate characters: {''.join(dups)!r}")
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def __eq__(self, other) -> bool:
        return isinstance(other, Charset) and self.chars == other.chars

    def index(self, char: str) -> int:
        """Class id of `char`; raises KeyError for characters outside the set."""
        return self._index[char]

    def get(self, char: str, default: int = -1) -> int:
        return self._index.get(char, default)

    def encode(self, text: str) -> list[int]:
        """Class ids of the characters of `text`; raises KeyError naming the first unknown one."""
        try:
            return [self._index[c] for c in text]
        except KeyError as err:
            raise KeyError(f"character {err.args[0]!r} of {text!r} is not in the charset") from None

    def sha256(self) -> str:
        return hashlib.sha256(self.to_text().encode("utf-8")).hexdigest()

    def to_text(self) -> str:
        return "".join(c + "\n" for c in self.chars)

    def save(self, path: str) -> None:
        with open_binary(path, "wb") as f:
            f.write(self.to_text().encode("utf-8"))

    @classmethod
    def load(cls, path: str) -> "Charset":
        """Reads a charset file (UTF-8, one character per line; a trailing newline is optional)."""
        with open_binary(os.fspath(path)) as f:
            text = f.read().decode("utf-8")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, 1):
            if len(line) != 1:
                raise ValueError(f"{path}: line {number}: expected one character, got {line!r}")
        return cls(lines)

    @classmethod
    def from_data(cls, chars: Iterable[str], *, order: str = "code") -> "Charset":
        """All distinct characters seen in the data.

        Args:
          order: "code" sorts by GB18030 byte code: GB2312 characters keep their code order,
            and GBK-only characters (first byte 0x81-0xA0, e.g. 宬) sort before them;
            "unicode" sorts by code point.
        """
        distinct = set(chars)
        if order == "unicode":
            return cls(sorted(distinct))
        if order != "code":
            raise ValueError(f"order must be 'code' or 'unicode'. Received: {order!r}")
        return cls(sorted(distinct, key=lambda c: (c.encode("gb18030", "replace"), c)))

    @classmethod
    def named(cls, spec: str) -> "Charset":
        """A charset by name (see the module docstring) or a path to a charset file."""
        if spec in ("gb2312-1", "gb2312_level1"):
            return cls(gb2312_level1())
        if spec == "gb2312":
            return cls(gb2312_hanzi())
        if spec in ("gb2312+lines", "lines"):
            return cls(_with_symbols(gb2312_hanzi(), LINE_SYMBOLS, gb2312_symbols()))
        if spec == "gb2312-1+lines":
            return cls(_with_symbols(gb2312_level1(), LINE_SYMBOLS))
        if os.path.exists(spec) or "://" in spec:
            return cls.load(spec)
        raise ValueError(f"unknown charset {spec!r}: use 'gb2312-1', 'gb2312', 'gb2312+lines', "
                         f"'gb2312-1+lines', or a charset file path")
