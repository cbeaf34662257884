"""`hccr-preprocess --synth-writers N`: synthetic writers of the job's own charset rendered into
OUTPUT/synthetic-writers/ and added to split "train" only, recorded in metadata.json."""
import glob
import json
import os

import numpy as np
import pytest

from beam_preprocess.contract import gnt, schema
from beam_preprocess.contract.tfrecords import iter_records
from beam_preprocess.job import pipeline, splits
from beam_preprocess.synthetic import synth, writers

CHARS = "啊阿埃挨"  # GB2312 level 1: every installed CJK font has them
QUIET = ["--progress-seconds", "0"]


def write_real(directory, writer_ids, chars=CHARS):
    """One GNT file per real writer (`<writer>-c.gnt`), every class once: dark bars on 255."""
    os.makedirs(directory, exist_ok=True)
    for w in writer_ids:
        rng = np.random.default_rng(int(w))
        samples = []
        for i, c in enumerate(chars):
            image = np.full((int(rng.integers(30, 50)), int(rng.integers(30, 50))), 255, np.uint8)
            image[5:-5, 4 + 3 * i:8 + 3 * i] = 20
            image[10:14, 5:-5] = 40
            samples.append((c, image))
        gnt.write_gnt(os.path.join(directory, f"{w}-c.gnt"), samples)
    return str(directory)


def run_job(*argv):
    report = pipeline.run([str(a) for a in [*argv, *QUIET]])
    assert report.ok, report.summary()
    return report.metadata


def shard_records(out_dir, split):
    records = []
    for path in sorted(glob.glob(os.path.join(out_dir, schema.shard_pattern(split)))):
        with open(path, "rb") as f:
            records += list(iter_records(f))
    return records


def synthetic_count(records):
    return sum(f"{writers.SYNTH_DIR}/".encode() in r for r in records)


@pytest.fixture(scope="module")
def glob_job(tmp_path_factory):
    """Real writers 0001-0003 (train) and 0004 (validation, one extra class), --charset data:
    once without the flag and once with 2 synthetic writers."""
    root = tmp_path_factory.mktemp("glob_job")
    real = write_real(root / "real", ["0001", "0002", "0003"])
    write_real(root / "held", ["0004"], CHARS + "哀")
    common = ["--split-glob", f"train={real}/*.gnt", "--split-glob",
              f"validation={root}/held/*.gnt", "--charset", "data"]
    plain = run_job(*common, "--output", root / "plain")
    mixed = run_job(*common, "--synth-writers", 2, "--synth-seed", 7, "--output", root / "mixed")
    return root, common, plain, mixed


def test_renders_the_whole_data_charset_into_train_only(glob_job):
    root, _, plain, mixed = glob_job
    out = str(root / "mixed")
    with open(os.path.join(out, schema.CHARSET_FILE), encoding="utf-8") as f:
        charset = f.read().split("\n")[:5]
    assert sorted(charset) == sorted(CHARS + "哀")  # the validation writer's class too
    names = sorted(os.listdir(os.path.join(out, writers.SYNTH_DIR)))
    assert names == ["S0001-synth.gnt", "S0002-synth.gnt", "synth.json"]
    for name in names[:2]:
        chars = [s.char for s in gnt.read_gnt(os.path.join(out, writers.SYNTH_DIR, name))]
        assert chars == charset  # every class once, in class order

    entry = mixed["synthetic_writers"]
    with open(os.path.join(out, writers.SYNTH_DIR, "synth.json"), encoding="utf-8") as f:
        available = json.load(f)["fonts_available"]
    assert entry["fonts"] and set(entry["fonts"]) <= set(available)
    assert {k: v for k, v in entry.items() if k != "fonts"} == {
        "count": 2, "seed": 7, "split": "train", "writers": "S0001-S0002",
        "directory": writers.SYNTH_DIR, "classes": 5, "samples": 10}

    # Samples land in train only; the counts reconcile with them included.
    assert synthetic_count(shard_records(out, "train")) == 10
    assert synthetic_count(shard_records(out, "validation")) == 0
    c = mixed["counts"]
    assert c["read"] == plain["counts"]["read"] + 10 == c["written"] + c["rejected"]
    assert mixed["splits"]["train"]["num_examples"] == plain["splits"]["train"][
        "num_examples"] + 10
    assert mixed["splits"]["train"]["num_writers"] == 3 + 2
    assert mixed["class_counts"]["train"] == {ch: n + 2 for ch, n in
                                              plain["class_counts"]["train"].items()} | {"哀": 2}
    assert mixed["splits"]["validation"] == plain["splits"]["validation"]
    assert mixed["class_counts"]["validation"] == plain["class_counts"]["validation"]
    assert mixed["charset_sha256"] == plain["charset_sha256"]  # the data charset is unchanged


def test_metadata_without_the_flag_has_no_entry(glob_job):
    _, _, plain, mixed = glob_job
    assert "synthetic_writers" not in plain
    changed = {"synthetic_writers", "command", "created", "splits", "class_counts", "counts",
               "bytes_written"}
    assert {k: v for k, v in mixed.items() if k not in changed} == {
        k: v for k, v in plain.items() if k not in changed - {"synthetic_writers"}}


def test_same_seed_same_bytes_other_seed_other_bytes(glob_job, tmp_path):
    root, common, _, _ = glob_job
    run_job(*common, "--synth-writers", 2, "--synth-seed", 7, "--output", tmp_path / "again")
    for pattern in (f"{writers.SYNTH_DIR}/*", "*.tfrecord", schema.CHARSET_FILE):
        first = sorted(glob.glob(os.path.join(root / "mixed", pattern)))
        second = sorted(glob.glob(os.path.join(tmp_path / "again", pattern)))
        assert [os.path.basename(p) for p in first] == [os.path.basename(p) for p in second]
        for a, b in zip(first, second):
            with open(a, "rb") as fa, open(b, "rb") as fb:
                assert fa.read() == fb.read(), a

    # Another seed renders other samples (rendering only: no second Beam job needed).
    files, _ = pipeline.discover_inputs(pipeline.build_parser().parse_args(
        [*common, "--output", str(tmp_path / "x")]))[:2]
    plan = writers.plan(files, None, 2, 8, "chars", str(tmp_path / "seed8"))
    writers.render(plan, str(tmp_path / "seed8"), files, progress=False)
    name = f"{writers.SYNTH_DIR}/S0001-synth.gnt"
    with open(root / "mixed" / name, "rb") as fa, open(tmp_path / "seed8" / name, "rb") as fb:
        assert fa.read() != fb.read()


def test_by_writer_splits_never_take_synthetic_writers(tmp_path):
    # CASIA writers: --split auto must stay "casia" (synthetic ids are no CASIA numbers), and
    # --validation-fraction 0.5 picks writer 1004 only; S0002 hashes below 0.5 too, so it would
    # be moved as well if the synthetic writers went through the fraction.
    assert splits.hash_fraction("S0002") < 0.5
    real = write_real(tmp_path / "real", ["1001", "1002", "1003", "1004", "1241"])
    charset = tmp_path / "charset.txt"  # a charset file: rendered whole, in its order
    charset.write_text("".join(c + "\n" for c in CHARS), encoding="utf-8")
    md = run_job("--input", real, "--charset", charset, "--validation-fraction", 0.5,
                 "--synth-writers", 3, "--output", tmp_path / "out")
    assert md["split_rule"].startswith("casia")
    assert {s: info["num_writers"] for s, info in md["splits"].items()} == {
        "train": 3 + 3, "validation": 1, "test": 1}
    out = str(tmp_path / "out")
    assert synthetic_count(shard_records(out, "train")) == 3 * len(CHARS)
    synthetic = os.path.join(out, writers.SYNTH_DIR, "S0003-synth.gnt")
    assert "".join(s.char for s in gnt.read_gnt(synthetic)) == CHARS
    for split in ("validation", "test"):
        records = shard_records(out, split)
        assert len(records) == len(CHARS) and synthetic_count(records) == 0


@pytest.mark.parametrize("extra, message", [
    (["--synth-writers", "-1"], "cannot be negative. Received: -1"),
    (["--synth-writers", "2", "--task", "lines", "--synth-lines", "3"], "for --task chars"),
])
def test_refuses_bad_flags(tmp_path, extra, message):
    real = write_real(tmp_path / "real", ["0001"])
    with pytest.raises(pipeline.InputError, match=message):
        pipeline.run(["--input", real, "--output", str(tmp_path / "out"), *extra, *QUIET])
    assert not os.path.exists(tmp_path / "out")


def test_refuses_without_a_train_split(tmp_path):
    real = write_real(tmp_path / "real", ["0001"])
    with pytest.raises(pipeline.InputError, match=r"no input is in it \(splits: validation\)"):
        pipeline.run(["--split-glob", f"validation={real}/*.gnt", "--synth-writers", "2",
                      "--output", str(tmp_path / "out"), *QUIET])
    assert not os.path.exists(tmp_path / "out")


def test_refuses_a_real_writer_with_a_synthetic_id(tmp_path):
    real = write_real(tmp_path / "real", ["0001"])
    os.rename(os.path.join(real, "0001-c.gnt"), os.path.join(real, "S0002-c.gnt"))
    with pytest.raises(pipeline.InputError, match="writer id 'S0002', the id of a synthetic"):
        pipeline.run(["--input", real, "--synth-writers", "2", "--output",
                      str(tmp_path / "out"), *QUIET])


def test_refuses_a_charset_no_font_covers_and_names_the_character(tmp_path):
    rare = "\U00030000"  # CJK Extension G: no font the project installs has it
    with pytest.raises(synth.NoFontError):
        synth.find_fonts([rare])
    charset = tmp_path / "charset.txt"
    charset.write_text("\n".join(CHARS + rare) + "\n", encoding="utf-8")
    real = write_real(tmp_path / "real", ["0001"])
    with pytest.raises(pipeline.InputError, match=r"1 of the 5 characters .*\(U\+30000\)"):
        pipeline.run(["--input", real, "--charset", str(charset), "--synth-writers", "1",
                      "--output", str(tmp_path / "out"), *QUIET])
    assert not os.path.exists(tmp_path / "out")


def test_output_with_synthetic_writers_is_replaced_only_with_overwrite(tmp_path):
    stale = tmp_path / "out" / writers.SYNTH_DIR / "S0009-synth.gnt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    with pytest.raises(pipeline.InputError, match="pass --overwrite"):
        pipeline.prepare_output(str(tmp_path / "out"), overwrite=False)
    pipeline.prepare_output(str(tmp_path / "out"), overwrite=True)
    assert not stale.exists()
