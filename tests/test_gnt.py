import io
import struct

import numpy as np
import pytest

from beam_preprocess.contract import gnt
from beam_preprocess.contract.errors import CasiaFormatError

# Counts from ../shared/data/README.md
REAL_COUNTS = {"宪": 600, "宀": 603, "宙": 601, "实": 599, "宠": 603, "它": 598, "宄": 239,
               "安": 603, "审": 597, "完": 600, "宓": 240, "室": 598, "宏": 600, "宬": 239,
               "宕": 240, "守": 603, "害": 601, "宿": 597, "宴": 599, "容": 597, "宰": 597}


def _images(rng, n):
    return [rng.integers(0, 256, size=(rng.integers(1, 40), rng.integers(1, 40)), dtype=np.uint8)
            for _ in range(n)]


def test_round_trip_is_byte_exact(tmp_path):
    rng = np.random.default_rng(0)
    chars = ["啊", "宬", "a", "7", "，", "座"]
    images = _images(rng, len(chars))
    path = tmp_path / "x.gnt"
    assert gnt.write_gnt(str(path), zip(chars, images)) == len(chars)
    samples = list(gnt.read_gnt(str(path)))
    assert [s.char for s in samples] == chars
    for s, im in zip(samples, images):
        np.testing.assert_array_equal(s.image, im)
        assert s.problem is None
    offsets = [0]
    for im in images[:-1]:
        offsets.append(offsets[-1] + 10 + im.size)
    assert [s.offset for s in samples] == offsets
    rewritten = gnt.gnt_bytes((s.code, s.image) for s in samples)
    assert rewritten == path.read_bytes()


def test_codes_decode_gb2312_then_gbk():
    assert gnt.decode_code("啊".encode("gb2312")) == ("啊", None)
    assert gnt.decode_code("宬".encode("gbk")) == ("宬", None)  # GBK only
    assert gnt.decode_code(b"A\x00") == ("A", None)  # single-byte symbol code
    char, problem = gnt.decode_code(b"\xff\xff")
    assert char is None and "0xFFFF" in problem


def test_undecodable_code_is_reported_not_raised():
    data = gnt.gnt_bytes([(b"\xff\xff", np.zeros((2, 2), np.uint8)),
                          ("中", np.zeros((3, 1), np.uint8))])
    samples = list(gnt.read_gnt(io.BytesIO(data), path="mem.gnt"))
    assert samples[0].char is None and "undecodable" in samples[0].problem
    assert samples[1].char == "中"


def test_encode_rejects_characters_without_a_two_byte_code():
    with pytest.raises(ValueError, match="no 2-byte GBK code"):
        gnt.encode_char("😀")


def _good_bytes():
    return gnt.gnt_bytes([("中", np.full((4, 5), 200, np.uint8)),
                          ("国", np.full((3, 3), 9, np.uint8))])


@pytest.mark.parametrize("mutate, offset, message", [
    (lambda b: b + b"\x01\x02\x03", 49, "truncated header: 3 of 10"),
    (lambda b: b[:-2], 30, "truncated bitmap: 7 of 9"),
    (lambda b: b[:30] + struct.pack("<I", 99) + b[34:], 30, "sample size field 99 != 10 + 3*3"),
    (lambda b: b[:30] + struct.pack("<I", 10) + b[34:36] + struct.pack("<HH", 0, 3) + b[40:], 30,
     "zero image size 0x3"),
])
def test_malformed_input_names_file_and_offset(mutate, offset, message):
    data = mutate(_good_bytes())
    with pytest.raises(CasiaFormatError) as info:
        list(gnt.read_gnt(io.BytesIO(data), path="bad.gnt"))
    err = info.value
    assert (err.path, err.offset) == ("bad.gnt", offset)
    assert message in err.reason
    assert str(err).startswith(f"bad.gnt: byte offset {offset}: ")


def test_resync_reports_a_bad_tail_as_one_skipped_range():
    data = _good_bytes() + b"\x05\x00\x00"
    items = list(gnt.read_gnt(io.BytesIO(data), path="t.gnt", resync=True))
    assert [type(i).__name__ for i in items] == ["GntSample", "GntSample", "SkippedBytes"]
    tail = items[-1]
    assert (tail.offset, tail.end, tail.bytes_skipped, tail.at_end) == (49, 52, 3, True)
    assert "truncated header" in tail.reason


def test_a_hostile_size_is_checked_before_anything_is_allocated():
    """65535 x 65535 declared in a 110-byte file: the old reader asked Python for 4 GiB."""
    import tracemalloc
    data = gnt.HEADER.pack(10 + 65535 * 65535, "中".encode("gbk"), 65535, 65535) + b"\xff" * 100
    for stream in (io.BytesIO(data), _Unseekable(data)):
        tracemalloc.start()
        items = list(gnt.read_gnt(stream, path="huge.gnt", resync=True))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 * gnt.MAX_READ  # Python-level allocations while reading
        [skipped] = items
        assert (skipped.offset, skipped.end, skipped.at_end) == (0, 110, True)
        assert "truncated bitmap: 100 of 4294836225 bytes" in skipped.reason


class _Unseekable(io.RawIOBase):
    """A stream that cannot tell its size (a pipe, a socket)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def read(self, n=-1):
        return self._data.read(n)


def test_reads_from_file_objects_and_paths_alike(tmp_path):
    data = _good_bytes()
    path = tmp_path / "a.gnt"
    path.write_bytes(data)
    from_path = [s.char for s in gnt.read_gnt(str(path))]
    from_file = [s.char for s in gnt.read_gnt(io.BytesIO(data))]
    assert from_path == from_file == ["中", "国"]


def test_real_sample_exact_counts(casia_sample_dir):
    import collections
    counts = collections.Counter()
    sizes = []
    for path in sorted(casia_sample_dir.glob("*.gnt")):
        for sample in gnt.read_gnt(str(path)):
            assert sample.problem is None
            counts[sample.char] += 1
            sizes.append(sample.image.shape)
    assert dict(counts) == REAL_COUNTS
    assert sum(counts.values()) == 11154
    assert min(min(s) for s in sizes) >= 20 and max(max(s) for s in sizes) <= 250


def test_reads_and_writes_through_tf_gfile_schemes():
    """URLs go through tf.io.gfile (gs://, s3://, hdfs://); TF's in-memory ram:// stands in."""
    from beam_preprocess.contract import dgrl
    images = [np.full((3, 4), 7, np.uint8), np.full((2, 2), 9, np.uint8)]
    gnt.write_gnt("ram://casia/a.gnt", zip(["中", "国"], images))
    samples = list(gnt.read_gnt("ram://casia/a.gnt"))
    assert [s.char for s in samples] == ["中", "国"] and samples[0].path == "ram://casia/a.gnt"
    dgrl.write_dgrl("ram://casia/p.dgrl", page_height=5, page_width=5,
                    lines=[("中国", 0, 0, images[0])])
    assert dgrl.read_dgrl("ram://casia/p.dgrl").lines[0].text == "中国"
    from beam_preprocess.contract.fileio import expand_globs
    assert expand_globs(["ram://casia/*.gnt"]) == ["ram://casia/a.gnt"]
