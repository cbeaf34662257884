import io
import struct

import numpy as np
import pytest

from beam_preprocess.contract import dgrl
from beam_preprocess.contract.errors import CasiaFormatError


def _page_bytes(code_length=2, lines=None, illustration="a page"):
    rng = np.random.default_rng(1)
    lines = lines or [("中文12,", 5, 7, rng.integers(0, 256, (6, 20), dtype=np.uint8)),
                      ("Ab。", 30, 9, rng.integers(0, 256, (4, 11), dtype=np.uint8))]
    buffer = io.BytesIO()
    dgrl.write_dgrl(buffer, page_height=60, page_width=40, lines=lines, code_length=code_length,
                    illustration=illustration)
    return buffer.getvalue(), lines


@pytest.mark.parametrize("code_length", [2, 4])
def test_round_trip(code_length):
    data, lines = _page_bytes(code_length)
    page = dgrl.read_dgrl(io.BytesIO(data), path="p.dgrl")
    assert (page.header.height, page.header.width, page.header.code_length) == (
        60, 40, code_length)
    assert [li.text for li in page.lines] == [t for t, *_ in lines]
    for li, (_, top, left, image) in zip(page.lines, lines):
        assert (li.top, li.left) == (top, left)
        np.testing.assert_array_equal(li.image, image)
        assert li.problems == ()
    rewritten = io.BytesIO()
    dgrl.write_dgrl(rewritten, page_height=60, page_width=40, code_length=code_length,
                    lines=[(li.text, li.top, li.left, li.image) for li in page.lines],
                    illustration="a page")
    assert rewritten.getvalue() == data


def test_ascii_code_length_one():
    data, _ = _page_bytes(1, lines=[("Hello 42.", 0, 0, np.zeros((2, 3), np.uint8))])
    page = dgrl.read_dgrl(io.BytesIO(data))
    assert page.lines[0].text == "Hello 42."


def test_variable_header_length_and_format_code_not_relied_on():
    long_header, _ = _page_bytes(illustration="x" * 300)
    page = dgrl.read_dgrl(io.BytesIO(long_header))
    assert page.header.illustration == "x" * 300
    odd = bytearray(long_header)
    odd[4:12] = b"WHATEVER"  # real files vary in this string
    assert [li.text for li in dgrl.read_dgrl(io.BytesIO(bytes(odd))).lines] == ["中文12,", "Ab。"]


def test_undecodable_label_is_reported():
    data, _ = _page_bytes()
    header_size = struct.unpack("<I", data[:4])[0]
    first_label = header_size + 12 + 4
    bad = data[:first_label] + b"\xff\xff" + data[first_label + 2:]
    line = dgrl.read_dgrl(io.BytesIO(bad)).lines[0]
    assert line.text[0] == dgrl.UNKNOWN_CHAR
    assert "undecodable" in line.problems[0]


def test_truncated_line_bitmap_names_offset():
    data, _ = _page_bytes()
    with pytest.raises(CasiaFormatError, match=r"p.dgrl: byte offset \d+: truncated bitmap"):
        dgrl.read_dgrl(io.BytesIO(data[:-3]), path="p.dgrl")


def test_resync_keeps_good_lines_before_a_bad_tail():
    data, _ = _page_bytes()
    page = dgrl.read_dgrl(io.BytesIO(data[:-3]), path="p.dgrl", resync=True)
    assert [li.text for li in page.lines] == ["中文12,"]
    [tail] = page.skipped
    assert tail.at_end and tail.end == len(data) - 3 and "line 1 of 2" in tail.reason


def test_impossible_header_size():
    with pytest.raises(CasiaFormatError, match="byte offset 0: header size 3 is impossible"):
        dgrl.read_dgrl(io.BytesIO(struct.pack("<I", 3) + b"\0" * 40), path="h.dgrl")


def test_truncated_header():
    data, _ = _page_bytes()
    with pytest.raises(CasiaFormatError, match="truncated"):
        dgrl.read_dgrl(io.BytesIO(data[:20]), path="h.dgrl")


def test_zero_line_size():
    data, _ = _page_bytes(lines=[("中", 0, 0, np.zeros((2, 2), np.uint8))])
    header_size = struct.unpack("<I", data[:4])[0]
    box = header_size + 12 + 4 + 2
    bad = data[:box + 8] + struct.pack("<I", 0) + data[box + 12:]
    with pytest.raises(CasiaFormatError, match=f"byte offset {box}: zero line image size"):
        dgrl.read_dgrl(io.BytesIO(bad), path="z.dgrl")
