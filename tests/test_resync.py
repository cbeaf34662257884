"""Damaged CASIA files lose only the damaged record: resynchronisation in the GNT and DGRL readers
and in the job, on real bytes of the shared CASIA sample (issue 12, items 1 and 3)."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from beam_preprocess.contract import dgrl, gnt
from beam_preprocess.job import pipeline
from tests.test_pipeline import read_rejects, read_split

N = 20       # records taken from the real file
DAMAGED = 5  # the record the damage hits


@pytest.fixture
def real_records(casia_sample_dir):
    """The raw bytes of the first N records of train-0000.gnt, and those samples as read."""
    with open(casia_sample_dir / "train-0000.gnt", "rb") as f:
        samples = [s for s, _ in zip(gnt.read_gnt(f, path="train-0000.gnt"), range(N))]
        f.seek(0)
        data = f.read(samples[-1].offset + gnt.HEADER_SIZE + samples[-1].image.size)
    records = [data[s.offset:s.offset + gnt.HEADER_SIZE + s.image.size] for s in samples]
    assert b"".join(records) == data
    return records, samples


def _read(data: bytes):
    items = list(gnt.read_gnt(io.BytesIO(data), path="damaged.gnt", resync=True))
    samples = [i for i in items if isinstance(i, gnt.GntSample)]
    skipped = [i for i in items if isinstance(i, gnt.SkippedBytes)]
    return samples, skipped


def _assert_intact(samples, originals, expected_indices):
    """The samples read are exactly the original samples `expected_indices`, pixel for pixel."""
    assert len(samples) == len(expected_indices)
    for sample, k in zip(samples, expected_indices):
        assert (sample.code, sample.char) == (originals[k].code, originals[k].char)
        np.testing.assert_array_equal(sample.image, originals[k].image)


def _offset(records, k):
    return sum(len(r) for r in records[:k])


def test_wrong_size_field_costs_that_record_only(real_records):
    records, originals = real_records
    bad = bytearray(records[DAMAGED])
    bad[0:4] = (int.from_bytes(bad[0:4], "little") + 7).to_bytes(4, "little")
    samples, [skipped] = _read(b"".join(records[:DAMAGED] + [bytes(bad)] + records[DAMAGED + 1:]))
    _assert_intact(samples, originals, [k for k in range(N) if k != DAMAGED])
    assert (skipped.offset, skipped.end) == (_offset(records, DAMAGED),
                                             _offset(records, DAMAGED + 1))
    assert not skipped.at_end and "sample size field" in skipped.reason
    assert skipped.path == "damaged.gnt"


def test_consistent_zero_width_record_is_skipped(real_records):
    records, originals = real_records
    height = originals[DAMAGED].image.shape[0]
    zero = gnt.HEADER.pack(gnt.HEADER_SIZE, originals[DAMAGED].code, 0, height)  # 10 + 0*h
    samples, [skipped] = _read(b"".join(records[:DAMAGED] + [zero] + records[DAMAGED + 1:]))
    _assert_intact(samples, originals, [k for k in range(N) if k != DAMAGED])
    start = _offset(records, DAMAGED)
    assert (skipped.offset, skipped.end) == (start, start + gnt.HEADER_SIZE)
    assert f"zero image size 0x{height}" in skipped.reason


@pytest.mark.parametrize("cut_at", ["end", "middle"])
def test_bitmap_cut_short_costs_at_most_the_record_and_one_neighbour(real_records, cut_at):
    records, originals = real_records
    record = records[DAMAGED]
    start = len(record) - 50 if cut_at == "end" else len(record) // 2
    short = record[:start] + record[start + 50:]
    samples, skipped = _read(b"".join(records[:DAMAGED] + [short] + records[DAMAGED + 1:]))
    kept = {s.offset for s in samples}
    lost = [k for k in range(N) if _offset(records, k) - (50 if k > DAMAGED else 0) not in kept]
    assert DAMAGED in lost and len(lost) <= 2 and set(lost) <= {DAMAGED, DAMAGED + 1}
    _assert_intact(samples, originals, [k for k in range(N) if k not in lost])
    assert len(skipped) == 1 and skipped[0].offset == _offset(records, DAMAGED)
    # Here the reader finds the next record inside the cut one: only the damaged one is lost.
    assert lost == [DAMAGED] and "cut short" in skipped[0].reason


def test_garbage_between_records_loses_nothing(real_records):
    records, originals = real_records
    garbage = np.random.default_rng(0).integers(0, 256, 37, dtype=np.uint8).tobytes()
    data = b"".join(records[:DAMAGED] + [garbage] + records[DAMAGED:])
    samples, [skipped] = _read(data)
    _assert_intact(samples, originals, list(range(N)))
    start = _offset(records, DAMAGED)
    assert (skipped.offset, skipped.end, skipped.bytes_skipped) == (start, start + 37, 37)


@pytest.mark.parametrize("cut", [3, 10 + 40])  # inside the last header; inside its bitmap
def test_truncated_tail_is_one_range_to_the_end(real_records, cut):
    records, originals = real_records
    data = b"".join(records[:N - 1]) + records[N - 1][:cut]
    samples, [skipped] = _read(data)
    _assert_intact(samples, originals, list(range(N - 1)))
    assert (skipped.offset, skipped.end, skipped.at_end) == (_offset(records, N - 1), len(data),
                                                             True)
    assert "truncated" in skipped.reason


def test_a_damaged_first_record_still_finds_the_rest(real_records):
    records, originals = real_records
    data = b"\x00" * 3 + b"".join(records)
    samples, [skipped] = _read(data)
    _assert_intact(samples, originals, list(range(N)))
    assert (skipped.offset, skipped.end) == (0, 3)
    assert gnt.start_problem(data[:4096], len(data)) is None
    assert gnt.start_problem(b"\x00" * 4096, 4096).startswith("its first record's zero image")


def test_without_resync_damage_still_raises_with_file_and_offset(real_records):
    records, _ = real_records
    data = b"".join(records[:DAMAGED]) + b"\x01" * 12 + b"".join(records[DAMAGED:])
    with pytest.raises(gnt.CasiaFormatError, match=f"damaged.gnt: byte offset "
                                                   f"{_offset(records, DAMAGED)}: "):
        list(gnt.read_gnt(io.BytesIO(data), path="damaged.gnt"))


# === The job: read = written + rejected, skipped bytes in metadata.json ===


def test_job_issue_example_wrong_size_at_sample_5(real_records, tmp_path, capsys):
    """20 samples, a bad size field at sample 5: 19 written + 1 rejected (was: "read 6 =
    written 5 + rejected 1")."""
    records, originals = real_records
    bad = bytearray(records[DAMAGED])
    bad[0:4] = (12345).to_bytes(4, "little")
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "0001-c.gnt").write_bytes(b"".join(records[:DAMAGED] + [bytes(bad)]
                                              + records[DAMAGED + 1:]))
    out = tmp_path / "out"
    assert pipeline.main(["--input", str(inp), "--output", str(out), "--charset", "data",
                          "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "read 20 = written 19 + rejected 1" in printed and "OK" in printed
    md = json.loads((out / "metadata.json").read_text("utf-8"))
    assert md["counts"] == {"read": 20, "written": 19, "rejected": 1}
    assert md["rejects"] == {"malformed_record": 1}
    assert md["bytes_skipped"] == len(records[DAMAGED])
    [reject] = read_rejects(out)
    assert reject["file"].endswith("0001-c.gnt") and reject["reason"] == "malformed_record"
    assert (reject["offset"], reject["end"]) == (_offset(records, DAMAGED),
                                                 _offset(records, DAMAGED + 1))
    assert "sample size field 12345" in reject["detail"]
    examples = read_split(out, "train")
    expected = {f"0001-c.gnt:{_offset(records, k)}" for k in range(N) if k != DAMAGED}
    assert {ex["source"].decode() for ex in examples} == expected
    assert sorted(ex["char"].decode() for ex in examples) == sorted(
        s.char for k, s in enumerate(originals) if k != DAMAGED)


# Runs `python -m beam_preprocess ARGS` as its only child, under an address-space limit, and
# prints that child's peak RSS: ru_maxrss of RUSAGE_CHILDREN in a process with no other child.
_MEASURE = """
import resource, subprocess, sys
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
code = subprocess.run([sys.executable, "-m", "beam_preprocess", *sys.argv[2:]],
                      preexec_fn=cap).returncode
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(code)
"""


def test_job_on_a_hostile_header_stays_small(tmp_path):
    """A 110-byte GNT file declaring 65535 x 65535. The whole job runs in a child process
    limited to 3 GiB of address space (the old reader asked for 4 GiB there and died with
    MemoryError) and peaks under 300 MB of RSS."""
    inp = tmp_path / "huge.gnt"
    inp.write_bytes(gnt.HEADER.pack(10 + 65535 * 65535, "中".encode("gbk"), 65535, 65535)
                    + b"\xff" * 100)
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(3 << 30), "--input", str(inp),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True,
                            timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "read 1 = written 0 + rejected 1" in result.stdout
    assert "rejected malformed_tail: 1" in result.stdout
    peak_kib = int(result.stdout.split("PEAK_RSS_KIB")[1].split()[0])
    assert 0 < peak_kib < 300 * 1024, peak_kib


# === DGRL ===


def _real_page(records, originals, tmp_path=None):
    """A DGRL page whose lines are real glyphs side by side (4 glyphs a line, 5 lines)."""
    lines = []
    for n in range(5):
        glyphs = [originals[4 * n + k].image for k in range(4)]
        height = max(g.shape[0] for g in glyphs)
        row = np.hstack([np.pad(g, ((0, height - g.shape[0]), (0, 6)), constant_values=255)
                         for g in glyphs])
        lines.append(("".join(originals[4 * n + k].char for k in range(4)), 10 + 120 * n, 10,
                      row))
    buffer = io.BytesIO()
    dgrl.write_dgrl(buffer, page_height=700, page_width=600, lines=lines)
    return buffer.getvalue(), lines


def _line_offsets(data):
    page = dgrl.read_dgrl(io.BytesIO(data))
    return [line.offset for line in page.lines] + [len(data)]


@pytest.mark.parametrize("damage", ["zero_width", "garbage", "cut_short"])
def test_dgrl_damaged_line_costs_that_line_only(real_records, damage):
    records, originals = real_records
    data, lines = _real_page(records, originals)
    offsets = _line_offsets(data)
    start, end = offsets[2], offsets[3]
    line = data[start:end]
    box = 4 + 2 * len(lines[2][0])
    if damage == "zero_width":
        line = line[:box + 12] + b"\x00" * 4 + line[box + 16:]
    elif damage == "garbage":
        line = line + b"\x07" * 23
    else:
        line = line[:len(line) // 2] + line[len(line) // 2 + 50:]
    damaged = data[:start] + line + data[end:]
    page = dgrl.read_dgrl(io.BytesIO(damaged), path="d.dgrl", resync=True)
    expected = [0, 1, 3, 4] if damage != "garbage" else [0, 1, 2, 3, 4]
    assert [li.text for li in page.lines] == [lines[k][0] for k in expected]
    for li, k in zip(page.lines, expected):
        np.testing.assert_array_equal(li.image, lines[k][3])
    [skipped] = page.skipped
    assert skipped.offset == (start if damage != "garbage" else end)
    assert skipped.end == (start + len(line) if damage != "garbage" else end + 23)


def test_dgrl_job_keeps_every_intact_line(real_records, tmp_path):
    records, originals = real_records
    data, lines = _real_page(records, originals)
    offsets = _line_offsets(data)
    bad = bytearray(data)
    bad[offsets[1]:offsets[1] + 4] = (10 ** 6).to_bytes(4, "little")  # impossible count
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "0001-P01.dgrl").write_bytes(bytes(bad))
    out = tmp_path / "out"
    report = pipeline.run(["--task", "lines", "--input", str(inp), "--output", str(out),
                           "--charset", "data", "--verify"])
    assert report.ok, report.summary()
    md = report.metadata
    assert md["counts"]["read"] == 5 and md["counts"]["written"] == 4
    assert md["rejects"] == {"malformed_record": 1}
    assert md["bytes_skipped"] == offsets[2] - offsets[1]
    texts = sorted(ex["text"].decode() for ex in read_split(out, "train", task="lines"))
    assert texts == sorted(lines[k][0] for k in (0, 2, 3, 4))


# === Sizes: line width, large headers ===


def test_a_one_pixel_tall_line_is_rejected_before_it_is_scaled():
    """A 1 x 20000 line (ink in columns 0-19998) would scale to 19999 * 56 + 8 pixels wide
    (about 63 MB at height 64); it becomes a line_too_wide reject, and nothing that size is
    allocated."""
    import tracemalloc

    from beam_preprocess.job import transforms
    bitmap = np.full((1, 20000), 255, np.uint8)
    bitmap[0, ::3] = 0
    line = dgrl.DgrlLine("中", ("中".encode("gbk"),), 0, 0, bitmap, 99, 0)
    f = transforms.InputFile("p.dgrl", "p.dgrl", "dgrl", 1, "0001", "train")
    cfg = transforms.JobConfig(task="lines", output="unused")
    tracemalloc.start()
    outcome = transforms.dgrl_line_outcome(line, f, {"中": 0}, cfg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(outcome, transforms.Reject) and outcome.reason == "line_too_wide"
    assert outcome.detail == ("a 20000x1 line scales to 1119952 pixels wide at height 64, over "
                              f"the maximum {transforms.MAX_LINE_WIDTH}")
    assert peak < 4 << 20
    # A real-sized line is not affected.
    bitmap = np.full((120, 2400), 255, np.uint8)
    bitmap[20:100, 10:2390:7] = 30
    line = dgrl.DgrlLine("中", line.codes, 0, 0, bitmap, 99, 0)
    assert isinstance(transforms.dgrl_line_outcome(line, f, {"中": 0}, cfg), transforms.Example)


def test_a_page_with_a_large_illustration_is_read_by_inspect_and_preprocess(tmp_path, capsys):
    """The old job looked for the whole header in the first 4096 bytes and refused the file
    that hccr-inspect read."""
    from beam_preprocess.contract.inspect_cli import main as inspect_main
    rng = np.random.default_rng(0)
    image = np.full((40, 120), 255, np.uint8)
    image[10:30, 10:110] = rng.integers(0, 100, (20, 100))
    inp = tmp_path / "in"
    inp.mkdir()
    dgrl.write_dgrl(str(inp / "0001-P01.dgrl"), page_height=200, page_width=200,
                    lines=[("中文", 5, 5, image)], illustration="插图" * 3000)
    assert inspect_main([str(inp / "0001-P01.dgrl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dgrl"]["lines"] == 1 and summary["problems"] == []
    assert pipeline.main(["--task", "lines", "--input", str(inp), "--output",
                          str(tmp_path / "out")]) == 0
    assert "read 1 = written 1 + rejected 0" in capsys.readouterr().out


def test_inspect_reports_the_skipped_range_and_reads_on(real_records, tmp_path, capsys):
    from beam_preprocess.contract.inspect_cli import main as inspect_main
    records, _ = real_records
    path = tmp_path / "0001-c.gnt"
    path.write_bytes(b"".join(records[:DAMAGED]) + b"\x01" * 12 + b"".join(records[DAMAGED:]))
    assert inspect_main([str(path)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["gnt"]["samples"] == N and summary["malformed_files"] == [str(path)]
    [problem] = summary["problems"]
    start = _offset(records, DAMAGED)
    assert (problem["offset"], problem["end"], problem["bytes_skipped"]) == (start, start + 12,
                                                                             12)
    assert f"up to the next well-formed record at byte {start + 12}" in problem["reason"]
