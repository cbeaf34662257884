"""The Beam preprocessing job: transforms, end-to-end runs read back with tf.data, rejects,
determinism across worker counts, errors, the lines task, and the real CASIA sample."""
import glob
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.testing import test_pipeline as beam_testing  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from beam_preprocess.contract import dgrl, gnt, metadata, schema
from beam_preprocess.contract.charset import Charset  # noqa: E402
from beam_preprocess.job import pipeline, transforms
from beam_preprocess.job.transforms import InputFile, JobConfig, ShardTask  # noqa: E402

CHARS = "啊阿埃挨哎唉"  # GB2312 level 1
MULTI_PROCESSING = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


# === Helpers ===


def glyph(rng, char_index=0):
    """A random 'handwritten' bitmap: a few dark strokes on 255, 20-60 px a side."""
    h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
    image = np.full((h, w), 255, np.uint8)
    for _ in range(2 + char_index % 3):
        y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        image[y:y + int(rng.integers(2, h - y + 1)), x:x + 3] = int(rng.integers(0, 120))
        image[y:y + 3, x:x + int(rng.integers(2, w - x + 1))] = int(rng.integers(0, 120))
    return image


def make_writers(directory, writers, chars=CHARS, per_class=2, seed=0):
    """One GNT file per writer (`<writer>-c.gnt`), every class `per_class` times."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for w in writers:
        rng = np.random.default_rng([seed, int(w)])
        samples = [(c, glyph(rng, i)) for _ in range(per_class) for i, c in enumerate(chars)]
        path = os.path.join(directory, f"{w}-c.gnt")
        gnt.write_gnt(path, samples)
        paths.append(path)
    return paths


def run_job(*argv):
    report = pipeline.run([str(a) for a in argv])
    assert report.ok, report.summary()
    return report


def read_split(out_dir, split, task="chars", compression=""):
    """Every example of a split, parsed with tf.data, as numpy dicts."""
    import tensorflow as tf
    files = sorted(tf.io.gfile.glob(os.path.join(out_dir, schema.shard_pattern(split))))
    spec = schema.feature_spec(task)
    ds = tf.data.TFRecordDataset(files, compression_type=compression).map(
        lambda r: tf.io.parse_single_example(r, spec))
    out = []
    for ex in ds:
        d = {k: (v.values.numpy() if isinstance(v, tf.SparseTensor) else v.numpy())
             for k, v in ex.items()}
        d["pixels"] = np.frombuffer(d["image"], np.uint8).reshape(d["height"], d["width"])
        out.append(d)
    return out


def read_rejects(out_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, schema.REJECTS_DIR, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


def shard_bytes(out_dir):
    return {os.path.relpath(p, out_dir): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(out_dir, "*.tfrecord*")) +
                            glob.glob(os.path.join(out_dir, schema.REJECTS_DIR, "*")))}


def beam_test_pipeline():
    # FnApiRunner, as the job uses: Beam's DirectRunner would first try to download Prism.
    return beam_testing.TestPipeline(runner="FnApiRunner")


# === Transforms with TestPipeline + assert_that ===


def _input_files(paths, split="train"):
    names = {p: os.path.basename(p) for p in paths}
    return [InputFile(p, names[p], "gnt", os.path.getsize(p), names[p][:4], split)
            for p in paths]


def test_build_charset_transform(tmp_path):
    paths = make_writers(tmp_path, ["1001"], chars="阿啊")
    gnt.write_gnt(str(tmp_path / "1002-c.gnt"), [("宀", glyph(np.random.default_rng(0))),
                                                 ("啊", glyph(np.random.default_rng(1)))])
    files = _input_files(paths + [str(tmp_path / "1002-c.gnt")])
    with beam_test_pipeline() as p:
        charset = p | beam.Create(files) | transforms.BuildCharset()
        assert_that(charset, equal_to([["啊", "阿", "宀"]]))  # GB code order, distinct


def test_write_shards_transform(tmp_path):
    paths = make_writers(tmp_path / "in", ["1001", "1002", "1003"], chars="啊阿")
    gnt.write_gnt(str(tmp_path / "in" / "1004-c.gnt"), [("宀", glyph(np.random.default_rng(0)))])
    files = _input_files(paths + [str(tmp_path / "in" / "1004-c.gnt")])
    tasks = [ShardTask("train", 0, 2, tuple(files[:2])), ShardTask("train", 1, 2, tuple(files[2:]))]
    config = JobConfig(task="chars", output=str(tmp_path / "out"), image_size=32, margin=2)
    with beam_test_pipeline() as p:
        charset = transforms.named_charset(p, "啊阿")
        results = (p | transforms.WriteShards(tasks, config, charset)
                   | beam.Map(lambda r: (r.split, r.index, r.files, r.read, r.written,
                                         r.rejected, r.rejects, r.class_counts)))
        assert_that(results, equal_to([
            ("train", 0, 2, 8, 8, 0, {}, {"啊": 4, "阿": 4}),
            ("train", 1, 2, 5, 4, 1, {"out_of_charset": 1}, {"啊": 2, "阿": 2})]))
    assert sorted(os.listdir(tmp_path / "out")) == [
        "rejects", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert os.listdir(tmp_path / "out" / "rejects") == ["rejects-train-00001-of-00002.jsonl"]


def test_summarize_combine():
    results = [transforms.ShardResult("train", 0, read=5, written=4, rejected=1,
                                      rejects={"out_of_charset": 1}, class_counts={"啊": 4}),
               transforms.ShardResult("train", 1, read=3, written=3,
                                      class_counts={"啊": 1, "阿": 2}),
               transforms.ShardResult("test", 0, read=2, written=1, rejected=1,
                                      rejects={"empty_bitmap": 1}, class_counts={"阿": 1})]
    with beam_test_pipeline() as p:
        summary = (p | beam.Create(results) | beam.CombineGlobally(transforms.Summarize())
                   | beam.Map(lambda s: (s["counts"]["read"], s["counts"]["written"],
                                         s["counts"]["rejected"], s["rejects"], s["num_examples"],
                                         s["class_counts"], s["shards_done"])))
        assert_that(summary, equal_to([(
            10, 8, 2, {"empty_bitmap": 1, "out_of_charset": 1}, {"test": 1, "train": 7},
            {"test": {"阿": 1}, "train": {"啊": 5, "阿": 2}}, {"test": 1, "train": 2})]))


def test_whole_job_graph_with_test_pipeline(tmp_path):
    paths = make_writers(tmp_path / "in", ["1001", "1241"], chars="啊阿")
    files = [InputFile(p, os.path.basename(p), "gnt", os.path.getsize(p), w, s)
             for p, w, s in zip(paths, ["1001", "1241"], ["train", "test"])]
    tasks = [ShardTask("train", 0, 1, (files[0],)), ShardTask("test", 0, 1, (files[1],))]
    config = JobConfig(task="chars", output=str(tmp_path / "out"))
    static = {"splits": {"train": {"num_shards": 1}, "test": {"num_shards": 1}},
              "command": "test", "created": "now"}
    with beam_test_pipeline() as p:
        md = pipeline.build_pipeline(p, files, tasks, config, static)  # charset from the data
        assert_that(md | beam.Map(lambda m: (m["num_classes"], m["counts"],
                                             {s: v["num_examples"] for s, v in
                                              m["splits"].items()})),
                    equal_to([(2, {"read": 8, "written": 8, "rejected": 0},
                               {"train": 4, "test": 4})]))
    assert metadata.load(str(tmp_path / "out")).charset.chars == ["啊", "阿"]


# === End to end ===


def test_end_to_end_read_back_with_tf_data(tmp_path):
    make_writers(tmp_path / "in", ["1001", "1002", "1003", "1241"])
    out = tmp_path / "out"
    report = run_job("--input", tmp_path / "in" / "*.gnt", "--output", out, "--verify",
                     "--num-shards", "2")
    md = report.metadata
    assert md["split_rule"] == "casia"
    assert md["counts"] == {"read": 48, "written": 48, "rejected": 0}
    assert {s: v["num_examples"] for s, v in md["splits"].items()} == {"train": 36, "test": 12}
    assert md["splits"]["train"]["num_shards"] == 2 and md["splits"]["test"]["num_shards"] == 1
    assert report.counters["read"] == 48 and report.counters["written"] == 48
    info = metadata.load(str(out))  # what the trainers call
    assert info.task == "chars" and info.num_classes == 3755 and info.image_width == 64
    assert info.charset == Charset.named("gb2312-1")
    for split, n in (("train", 36), ("test", 12)):
        examples = read_split(out, split)
        assert len(examples) == n == info.num_examples(split)
        for ex in examples:
            assert info.charset.chars[ex["label"]] == ex["char"].decode()
            assert ex["pixels"].shape == (64, 64) and ex["pixels"].min() < 128
            assert ex["pixels"][0].min() == 255  # margin
            file, offset = ex["source"].decode().rsplit(":", 1)
            assert file.endswith("-c.gnt") and int(offset) >= 0
            assert ex["writer"].decode() == file[:4]
            assert 20 <= ex["orig_height"] < 60 and 20 <= ex["orig_width"] < 60
        counts = {}
        for ex in examples:
            counts[ex["char"].decode()] = counts.get(ex["char"].decode(), 0) + 1
        assert counts == md["class_counts"][split]
    # The first train example is the first sample of the first file of shard 0, exactly.
    first = next(gnt.read_gnt(str(tmp_path / "in" / "1001-c.gnt")))
    from beam_preprocess.contract import imaging
    train0 = read_split(out, "train")
    assert any(np.array_equal(ex["pixels"], imaging.normalize_char(first.image))
               and ex["source"] == b"1001-c.gnt:0" for ex in train0)
    assert sorted(os.listdir(out)) == ["charset.txt", "metadata.json",
                                       "test-00000-of-00001.tfrecord",
                                       "train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]


def test_rejects_reconcile_with_corrupted_and_out_of_charset_inputs(tmp_path, capsys):
    rng = np.random.default_rng(3)
    inp = tmp_path / "in"
    make_writers(inp, ["1001"])  # 12 good samples
    good = gnt.gnt_bytes([("啊", glyph(rng)), ("阿", glyph(rng))])
    (inp / "1002-c.gnt").write_bytes(good + good[:15])  # truncated tail after 2 samples
    gnt.write_gnt(str(inp / "1003-c.gnt"), [
        ("宀", glyph(rng)),                        # GB2312 level 2: out of charset
        ("宬", glyph(rng)),                        # GBK only: out of charset
        (b"\xff\xff", glyph(rng)),                 # undecodable code
        ("啊", np.full((8, 8), 255, np.uint8)),    # empty bitmap
        ("埃", glyph(rng)),                        # good
    ])
    out = tmp_path / "out"
    assert pipeline.main(["--input", str(inp / "*.gnt"), "--output", str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "read 20 = written 15 + rejected 5" in printed
    assert "rejected malformed_tail: 1" in printed and "OK" in printed
    md = json.loads((out / "metadata.json").read_text("utf-8"))
    assert md["counts"] == {"read": 20, "written": 15, "rejected": 5}
    assert md["rejects"] == {"empty_bitmap": 1, "malformed_tail": 1, "out_of_charset": 2,
                             "undecodable_code": 1}
    rejects = read_rejects(out)
    assert len(rejects) == 5
    by_reason = {}
    for r in rejects:
        assert {"file", "offset", "reason", "detail", "split", "writer"} <= set(r)
        by_reason.setdefault(r["reason"], []).append(r)
    tail = by_reason["malformed_tail"][0]
    assert tail["file"].endswith("1002-c.gnt") and tail["offset"] == len(good)
    assert tail["bytes_skipped"] == 15 and "truncated" in tail["detail"]
    assert sorted(r["char"] for r in by_reason["out_of_charset"]) == sorted("宀宬")
    assert by_reason["undecodable_code"][0]["code"] == "FFFF"
    assert by_reason["empty_bitmap"][0]["char"] == "啊"
    assert sum(len(read_split(out, s)) for s in md["splits"]) == 15


def test_charset_from_data_keeps_out_of_charset_classes(tmp_path):
    rng = np.random.default_rng(4)
    inp = tmp_path / "in"
    make_writers(inp, ["0001", "0002"], chars="啊阿")
    gnt.write_gnt(str(inp / "0003-c.gnt"), [("宀", glyph(rng)), ("宬", glyph(rng))])
    out = tmp_path / "out"
    report = run_job("--split-glob", f"train={inp}/000[12]-c.gnt",
                     "--split-glob", f"validation={inp}/0003-c.gnt",
                     "--output", out, "--charset", "data", "--compression", "gzip", "--verify")
    md = report.metadata
    assert md["counts"]["rejected"] == 0 and md["compression"] == "GZIP"
    info = metadata.load(str(out))
    assert info.charset.chars == Charset.from_data("啊阿宀宬").chars
    assert {s: v["num_examples"] for s, v in md["splits"].items()} == {"train": 8,
                                                                      "validation": 2}
    val = read_split(out, "validation", compression="GZIP")
    assert sorted(info.charset.chars[ex["label"]] for ex in val) == sorted("宀宬")
    assert all(name.endswith(".tfrecord.gz") for name in os.listdir(out)
               if "tfrecord" in name)


@pytest.mark.slow
def test_shards_are_byte_identical_across_worker_counts(tmp_path):
    """In-process, multi-threaded and multi-processing runs (the multi_processing run is the
    one with real worker processes) write the same bytes."""
    inp = tmp_path / "in"
    make_writers(inp, ["1001", "1002", "1003", "1004", "1005", "1241"], per_class=3)
    gnt.write_gnt(str(inp / "1006-c.gnt"), [("宀", glyph(np.random.default_rng(9)))])
    outputs = []
    for name, flags in (("one", ["--direct_num_workers", "1"]),
                        ("threads", ["--direct_num_workers", "3",
                                     "--direct_running_mode", "multi_threading"]),
                        ("processes", MULTI_PROCESSING)):
        out = tmp_path / name
        report = run_job("--input", inp, "--output", out, "--num-shards", "3", "--verify",
                         *flags)
        assert report.metadata["counts"] == {"read": 109, "written": 108, "rejected": 1}
        assert report.counters["read"] == 109
        outputs.append(shard_bytes(out))
    assert len(outputs[0]) == 3 + 1 + 1  # train 3 shards, test 1 shard, 1 rejects file
    assert outputs[0] == outputs[1] == outputs[2]


def test_rerun_needs_overwrite_and_is_identical(tmp_path):
    make_writers(tmp_path / "in", ["1001", "1002"])
    out = tmp_path / "out"
    run_job("--input", tmp_path / "in", "--output", out)
    before = shard_bytes(out)
    with pytest.raises(pipeline.InputError, match="--overwrite"):
        pipeline.run(["--input", str(tmp_path / "in"), "--output", str(out)])
    run_job("--input", tmp_path / "in", "--output", out, "--overwrite", "--num-shards", "1")
    assert sorted(shard_bytes(out)) == ["train-00000-of-00001.tfrecord"]  # old shards removed
    run_job("--input", tmp_path / "in", "--output", out, "--overwrite")
    assert shard_bytes(out) == before
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("argv_fn, message", [
    (lambda d: ["--input", f"{d}/nothing-*.gnt"], "matches no file"),
    (lambda d: ["--input", f"{d}/notes.txt"], "not a CASIA file"),
    (lambda d: ["--input", f"{d}/1009-c.gnt"], "not a GNT file"),
    (lambda d: ["--input", f"{d}/001-P01.dgrl"], "use --task lines"),
    (lambda d: ["--task", "lines", "--input", f"{d}/1001-c.gnt"], "--synth-lines"),
    (lambda d: ["--input", f"{d}/1001-c.gnt", "--split", "casia", "--split-glob", "a=b"],
     "do not add --input"),
    (lambda d: ["--input", f"{d}/1001-c.gnt", "--charset", "nope"], "unknown charset"),
])
def test_bad_inputs_are_clear_errors(tmp_path, capsys, argv_fn, message):
    make_writers(tmp_path, ["1001"], chars="啊")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "1009-c.gnt").write_bytes(b"PK\x03\x04 this is a zip file, not GNT")
    dgrl.write_dgrl(str(tmp_path / "001-P01.dgrl"), page_height=40, page_width=40,
                    lines=[("啊", 0, 0, glyph(np.random.default_rng(0)))])
    code = pipeline.main(argv_fn(tmp_path) + ["--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("hccr-preprocess: error:") and message in err
    assert not (tmp_path / "out").exists()


def test_casia_split_flag_rejects_non_casia_writers(tmp_path, capsys):
    make_writers(tmp_path, ["0000"], chars="啊")
    assert pipeline.main(["--input", str(tmp_path / "*.gnt"), "--output",
                          str(tmp_path / "out"), "--split", "casia"]) == 2
    assert "0000-c.gnt" in capsys.readouterr().err


def test_unreconciled_counts_exit_non_zero(monkeypatch, capsys):
    md = {"task": "chars", "counts": {"read": 10, "written": 8, "rejected": 1},
          "rejects": {"out_of_charset": 1},
          "splits": {"train": {"num_examples": 8, "num_shards": 1, "shards_written": 1,
                               "num_files": 1, "num_writers": 1}}}
    problems = pipeline.reconcile(md, {"read": 10, "written": 8, "rejected": 1})
    assert problems == ["read 10 != written 8 + rejected 1"]
    assert pipeline.reconcile(dict(md, counts={"read": 9, "written": 8, "rejected": 1}),
                              {"read": 9, "written": 7, "rejected": 1}) == [
        "Beam counter written = 7 but metadata.json says 8"]
    report = pipeline.JobReport("out", md, {}, problems, [], 1.0)
    monkeypatch.setattr(pipeline, "run", lambda argv: report)
    assert pipeline.main([]) == 1
    assert "FAILED" in capsys.readouterr().out


# === Lines ===


def _line_image(rng, n_chars, size=40):
    """A line bitmap: one dark bar per character."""
    glyphs = []
    for _ in range(n_chars):
        g = np.full((size, size), 255, np.uint8)
        g[5:35, int(rng.integers(5, 15)):int(rng.integers(20, 35))] = int(rng.integers(0, 100))
        glyphs.append(g)
    return np.concatenate(glyphs, axis=1)


def test_lines_from_dgrl_and_synthetic_lines_from_gnt(tmp_path):
    rng = np.random.default_rng(5)
    inp = tmp_path / "in"
    make_writers(inp, ["0001"], chars="啊阿埃挨")
    dgrl.write_dgrl(str(inp / "0001-P01.dgrl"), page_height=300, page_width=400, lines=[
        ("啊阿，12", 10, 10, _line_image(rng, 5)),
        ("阿宬埃", 60, 10, _line_image(rng, 3)),              # 宬 (GBK only) not in gb2312+lines
        ("埃挨", 110, 10, np.full((40, 80), 255, np.uint8)),  # empty bitmap
        ("", 160, 10, _line_image(rng, 1)),                   # no label
    ])
    # A page cut inside its second line (one line, then a malformed tail) and a page whose
    # header claims an impossible line count (the whole file is rejected).
    page = tmp_path / "page.dgrl"
    dgrl.write_dgrl(str(page), page_height=100, page_width=300, lines=[
        ("挨埃", 10, 10, _line_image(rng, 2)), ("啊啊", 50, 10, _line_image(rng, 2))])
    data = page.read_bytes()
    (inp / "0002-P01.dgrl").write_bytes(data[:-100])
    header_size = int.from_bytes(data[:4], "little")
    broken = bytearray(data)
    broken[header_size + 8:header_size + 12] = (1 << 30).to_bytes(4, "little")
    (inp / "0003-P01.dgrl").write_bytes(bytes(broken))
    out = tmp_path / "out"
    report = run_job("--task", "lines", "--input", inp, "--output", out, "--synth-lines", "5",
                     "--synth-line-chars", "3,6", "--verify")
    md = report.metadata
    assert md["image_width"] is None and md["image_height"] == 64
    assert md["counts"] == {"read": 15, "written": 2, "rejected": 5, "pooled": 8,
                            "synthesized": 5, "synth_missing": 0}
    assert md["rejects"] == {"empty_bitmap": 1, "empty_label": 1, "line_has_unknown_chars": 1,
                             "malformed_file": 1, "malformed_tail": 1}
    unknown = [r for r in read_rejects(out) if r["reason"] == "line_has_unknown_chars"][0]
    assert "宬" in unknown["detail"] and unknown["text"] == "阿宬埃" and unknown["line"] == 1
    info = metadata.load(str(out))
    examples = read_split(out, "train", task="lines")
    assert len(examples) == 7 == info.num_examples("train")
    sources = sorted(ex["source"].decode() for ex in examples)
    assert sources[0].startswith("0001-P01.dgrl:") and sources[-1].startswith("0002-P01.dgrl:")
    assert [s.split(":")[1] for s in sources[1:-1]] == [f"synth-{k}" for k in range(5)]
    for ex in examples:
        text = ex["text"].decode()
        assert list(ex["labels"]) == info.charset.encode(text)
        assert ex["pixels"].shape[0] == 64 and ex["pixels"].shape[1] > 64
        if "synth" in ex["source"].decode():
            assert 3 <= len(text) <= 6 and set(text) <= set("啊阿埃挨")
    # Deterministic for the seed, different for another seed.
    run_job("--task", "lines", "--input", inp, "--output", tmp_path / "again",
            "--synth-lines", "5", "--synth-line-chars", "3,6")
    assert shard_bytes(tmp_path / "again") == shard_bytes(out)
    other = run_job("--task", "lines", "--input", inp, "--output", tmp_path / "other",
                    "--synth-lines", "5", "--synth-line-chars", "3,6", "--seed", "1")
    assert shard_bytes(tmp_path / "other") != shard_bytes(out)
    assert other.ok


# === The shared real CASIA sample ===


@pytest.mark.slow
def test_real_sample_default_charset_rejects_the_five_classes(casia_sample_dir, tmp_path):
    out = tmp_path / "out"
    report = run_job("--input", casia_sample_dir / "*.gnt", "--output", out, "--verify")
    md = report.metadata
    assert md["counts"] == {"read": 11154, "written": 11154 - 1561, "rejected": 1561}
    assert md["rejects"] == {"out_of_charset": 1561}
    assert report.counters["rejected.out_of_charset"] == 1561
    per_char = {}
    for r in read_rejects(out):
        per_char[r["char"]] = per_char.get(r["char"], 0) + 1
    assert per_char == {"宀": 603, "宄": 239, "宓": 240, "宕": 240, "宬": 239}
    assert len(md["class_counts"]["train"]) == 16


@pytest.mark.slow
def test_real_sample_charset_from_data_with_a_validation_writer(casia_sample_dir, tmp_path):
    out = tmp_path / "out"
    report = run_job("--split-glob", f"train={casia_sample_dir}/train-000[0-2].gnt",
                     "--split-glob", f"validation={casia_sample_dir}/train-0003.gnt",
                     "--output", out, "--charset", "data", "--verify", *MULTI_PROCESSING)
    md = report.metadata
    assert md["counts"] == {"read": 11154, "written": 11154, "rejected": 0}
    assert md["num_classes"] == 21
    n_val = md["splits"]["validation"]["num_examples"]
    assert md["splits"]["train"]["num_examples"] + n_val == 11154
    val = read_split(out, "validation")
    assert len(val) == n_val and {ex["writer"] for ex in val} == {b"0003"}
    assert sum(md["class_counts"]["validation"].values()) == n_val


def test_misspelt_flags_are_errors_not_beam_options(tmp_path):
    with pytest.raises(pipeline.InputError, match="unknown flag '--num-shard'"):
        pipeline.run(["--input", str(tmp_path), "--output", str(tmp_path / "o"),
                      "--num-shard", "3"])
