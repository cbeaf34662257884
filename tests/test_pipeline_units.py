"""Unit tests of the preprocessing job's pieces: splits, shard plan, TFRecord framing, outcomes."""
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from beam_preprocess.contract import gnt, tfrecords
from beam_preprocess.job import beam_private, pipeline, splits, transforms


@pytest.mark.parametrize("name, writer", [
    ("1001-c.gnt", "1001"), ("001-f.gnt", "001"), ("C001-f-f.gnt", "C001"),
    ("001-P16.dgrl", "001"), ("train-0003.gnt", "0003"), ("s3://b/in/1241-c.gnt", "1241"),
    ("0007-synth.gnt", "0007"), ("synth-w0001.gnt", "w0001"), ("abc.gnt", "abc"),
])
def test_writer_id_from_file_names(name, writer):
    assert splits.writer_id(name) == writer


@pytest.mark.parametrize("writer, split", [
    ("1001", "train"), ("1240", "train"), ("1241", "test"), ("1300", "test"), ("001", "train"),
    ("336", "train"), ("337", "test"), ("420", "test"), ("501", "train"), ("741", "test"),
    ("C001", "test"), ("1301", None), ("0000", None), ("450", None), ("w0001", None),
])
def test_casia_split_rule(writer, split):
    assert splits.casia_split(writer) == split


def test_split_modes():
    casia = ["d/1001-c.gnt", "d/1241-c.gnt"]
    assert splits.assign_splits(casia, "auto")[0] == {casia[0]: "train", casia[1]: "test"}
    other = ["d/train-0000.gnt", "d/train-0003.gnt"]
    assignment, rule = splits.assign_splits(other, "auto")
    assert set(assignment.values()) == {"train"} and rule.startswith("auto")
    with pytest.raises(splits.SplitError, match="train-0000.gnt"):
        splits.assign_splits(other, "casia")
    assert set(splits.assign_splits(casia, "none")[0].values()) == {"train"}


def test_validation_fraction_is_a_stable_hash_of_the_writer():
    paths = [f"d/{1001 + i}-c.gnt" for i in range(200)]
    a = splits.apply_validation_fraction({p: "train" for p in paths}, 0.2)
    b = splits.apply_validation_fraction({p: "train" for p in paths}, 0.2)
    assert a == b
    n_val = sum(s == "validation" for s in a.values())
    assert 20 <= n_val <= 60
    # Stable across Python processes and versions: sha256, not hash().
    assert splits.hash_fraction("1001") == pytest.approx(
        int.from_bytes(__import__("hashlib").sha256(b"1001").digest()[:8], "big") / 2 ** 64)
    # Test files stay in test.
    assert splits.apply_validation_fraction({"x/1241-c.gnt": "test"}, 0.99) == {
        "x/1241-c.gnt": "test"}


def test_relative_names():
    assert splits.relative_names(["/a/b/x.gnt", "/a/b/y.gnt"]) == {"/a/b/x.gnt": "x.gnt",
                                                                   "/a/b/y.gnt": "y.gnt"}
    assert splits.relative_names(["s3://k/p/trn/1.gnt", "s3://k/p/tst/1.gnt"]) == {
        "s3://k/p/trn/1.gnt": "trn/1.gnt", "s3://k/p/tst/1.gnt": "tst/1.gnt"}
    assert splits.relative_names(["/d/only.gnt"]) == {"/d/only.gnt": "only.gnt"}


def test_plan_shards_is_balanced_complete_and_order_independent():
    files = [splits.SizedFile(f"{i:04d}.gnt", size) for i, size in
             enumerate([100, 90, 80, 70, 60, 50, 40, 30, 20, 10])]
    plan = splits.plan_shards(files, 3)
    assert sorted(k for shard in plan for k in shard) == [f.key for f in files]
    loads = [sum(f.size for f in files if f.key in shard) for shard in plan]
    assert max(loads) - min(loads) <= 20
    assert splits.plan_shards(list(reversed(files)), 3) == plan
    assert all(shard == sorted(shard) for shard in plan)
    assert splits.plan_shards(files[:2], 4)[2:] == [[], []]


def test_auto_num_shards():
    assert splits.auto_num_shards(4, 60 << 20) == 4
    assert splits.auto_num_shards(300, 100 << 20) == 16
    assert splits.auto_num_shards(1000, 6400 << 20) == 100


def test_split_names_are_checked():
    assert splits.check_split_name("validation_2") == "validation_2"
    with pytest.raises(ValueError):
        splits.check_split_name("train-a")


def test_tfrecord_framing_matches_tensorflow(tmp_path):
    import tensorflow as tf
    records = [b"", b"a", bytes(range(256)) * 40]
    for compression in ("", "GZIP"):
        path = str(tmp_path / f"x{compression}.tfrecord")
        with open(path, "wb") as f:
            writer = tfrecords.RecordWriter(f, compression)
            for r in records:
                writer.write(r)
            writer.close()
        got = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=compression)]
        assert got == records
        with open(path, "rb") as f:
            assert list(tfrecords.iter_records(f, compression)) == records
        with open(path, "rb") as f:  # deterministic bytes, gzip included
            first = f.read()
        buf = io.BytesIO()
        writer = tfrecords.RecordWriter(buf, compression)
        for r in records:
            writer.write(r)
        writer.close()
        assert buf.getvalue() == first
    corrupt = bytearray(tfrecords.frame(b"hello"))
    corrupt[-6] ^= 1
    with pytest.raises(ValueError, match="CRC"):
        list(tfrecords.iter_records(io.BytesIO(bytes(corrupt))))


def test_command_line_secrets_are_redacted():
    cmd = pipeline.redacted_command(["--input", "s3://b/*.gnt", "--s3_secret_access_key", "K",
                                     "--s3_session_token=T", "--s3_access_key_id", "id"])
    assert "K" not in cmd.split() and "T" not in cmd and "<redacted>" in cmd
    assert cmd.startswith("hccr-preprocess --input")


def test_sniff_rejects_files_that_are_not_casia(tmp_path):
    good = tmp_path / "1001-c.gnt"
    gnt.write_gnt(str(good), [("啊", np.zeros((3, 4), np.uint8))])
    pipeline.sniff(str(good), "gnt", good.stat().st_size)
    bad = tmp_path / "1002-c.gnt"
    bad.write_bytes(b"<html>not a gnt file</html>")
    with pytest.raises(pipeline.InputError, match="not a GNT file"):
        pipeline.sniff(str(bad), "gnt", bad.stat().st_size)
    with pytest.raises(pipeline.InputError, match="not a DGRL file: byte offset 0: header size"):
        pipeline.sniff(str(bad), "dgrl", bad.stat().st_size)


def test_char_outcomes_cover_every_reason():
    cfg = transforms.JobConfig(task="chars", output="/unused")
    f = transforms.InputFile("/d/1001-c.gnt", "1001-c.gnt", "gnt", 0, "1001", "train")
    index = {"啊": 0}
    ink = np.full((10, 10), 255, np.uint8)
    ink[2:8, 2:8] = 0

    def sample(char, image, code=b"\xb0\xa1"):
        return gnt.GntSample(char, code, image, 42, f.path, 3)

    ok = transforms.char_outcome(sample("啊", ink), f, index, cfg)
    assert isinstance(ok, transforms.Example) and ok.chars == "啊"
    out = transforms.char_outcome(sample("宀", ink), f, index, cfg)
    assert out.reason == "out_of_charset" and out.record(f)["char"] == "宀"
    out = transforms.char_outcome(sample(None, ink, b"\xff\xff"), f, index, cfg)
    assert out.reason == "undecodable_code"
    out = transforms.char_outcome(sample("啊", np.full((5, 5), 255, np.uint8)), f, index, cfg)
    assert out.reason == "empty_bitmap"
    record = out.record(f)
    assert record["file"] == f.path and record["offset"] == 42 and record["split"] == "train"


def test_beam_pipeline_options_pass_through_unchanged():
    beam_flags = ["--runner", "DataflowRunner", "--project", "p", "--region", "europe-west4",
                  "--temp_location", "gs://b/tmp", "--setup_file", "./setup.py",
                  "--flink_master=localhost:8081", "--direct_num_workers", "2",
                  "--direct_running_mode", "multi_processing", "--s3_endpoint_url",
                  "http://127.0.0.1:9000", "--job-server-timeout", "60"]
    args, rest = pipeline.build_parser().parse_known_args(
        ["--input", "x.gnt", "--output", "o", "--num-shards", "4"] + beam_flags)
    assert rest == beam_flags and args.num_shards == 4
    pipeline.check_beam_args(rest)
    from apache_beam.options.pipeline_options import PipelineOptions
    options = PipelineOptions(rest).get_all_options()
    assert options["runner"] == "DataflowRunner" and options["direct_num_workers"] == 2
    assert options["s3_endpoint_url"] == "http://127.0.0.1:9000"


def test_the_beam_internals_the_local_runner_needs_are_installed():
    problems = beam_private.private_api_problems()
    assert not problems, "\n".join(problems)
    from apache_beam.options.pipeline_options import PipelineOptions
    runner = beam_private.fn_api_runner(PipelineOptions(
        ["--default_sdk_harness_log_level=WARNING", "--s3_endpoint_url=http://127.0.0.1:9"]))
    # What the worker processes receive (local_job_service.py starts them with these options).
    options = runner._provision_info.provision_info.pipeline_options
    assert options["beam:option:default_sdk_harness_log_level:v1"] == "WARNING"
    assert options["beam:option:s3_endpoint_url:v1"] == "http://127.0.0.1:9"


def test_a_missing_beam_internal_is_named(monkeypatch):
    monkeypatch.setattr(beam_private, "REQUIRED", beam_private.REQUIRED + (
        ("apache_beam.runners.portability.portable_runner", "JobServiceHandle.gone", None),
        ("apache_beam.runners.portability.fn_api_runner.fn_runner", "FnApiRunner", "no_such"),
        ("apache_beam.portability.api", "beam_provision_api_pb2.ProvisionInfo", "no_field")))
    problems = beam_private.private_api_problems()
    assert len(problems) == 3
    assert "JobServiceHandle.gone is gone" in problems[0] and "beam_private.py" in problems[0]
    assert "FnApiRunner takes no 'no_such' argument" in problems[1]
    assert "ProvisionInfo has no 'no_field' field" in problems[2]
    with pytest.raises(RuntimeError, match="JobServiceHandle.gone"):
        beam_private.fn_api_runner(None)


def test_validation_fraction_never_leaves_validation_empty_with_two_or_more_writers():
    paths = [f"S{w:04d}-synth.gnt" for w in range(1, 4)]
    assert not any(splits.hash_fraction(splits.writer_id(p)) < 0.01 for p in paths)
    assigned = splits.apply_validation_fraction({p: "train" for p in paths}, 0.01)
    assert sorted(assigned.values()) == ["train", "train", "validation"]
    lonely = splits.apply_validation_fraction({"S0001-synth.gnt": "train"}, 0.01)
    assert lonely == {"S0001-synth.gnt": "train"}


@pytest.mark.parametrize("below", [False, True])
def test_an_output_path_that_is_a_file_is_a_one_line_error(tmp_path, capsys, below):
    """The old job ran the whole pipeline, then died in os.makedirs with a traceback."""
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    gnt.write_gnt(str(tmp_path / "0001-c.gnt"), [("啊", np.zeros((4, 4), np.uint8))])
    output = taken / "sub" if below else taken
    code = pipeline.main(["--input", str(tmp_path / "0001-c.gnt"), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    what = f"lies under the file {taken}" if below else "is a file"
    assert f"hccr-preprocess: error: --output {output} {what}, not a directory\n" in err
    assert taken.read_text() == "not a directory"


def test_default_line_charset_is_all_of_gb2312():
    """HWDB2.x lines hold GB2312 level-2 characters: the old default (level 1 only) rejected
    every line holding one."""
    from beam_preprocess.contract import charset as cs
    lines = cs.Charset.named(pipeline.DEFAULT_CHARSETS["lines"])
    assert pipeline.DEFAULT_CHARSETS["lines"] == "gb2312+lines" and len(lines) == 7541
    assert lines.chars[:6763] == cs.gb2312_hanzi() == cs.Charset.named("gb2312").chars
    assert lines.chars[:3755] == cs.gb2312_level1()
    for c in "宀宄宓宕" + "09azAZ,.，。、“”《》％０Ａα":
        assert c in lines
    assert set(cs.gb2312_symbols()) <= set(lines.chars)
    assert "宬" not in lines  # GBK only: pass --charset data to keep such characters
    assert len(cs.Charset.named("gb2312-1+lines")) == 3876  # unchanged


def test_a_line_with_an_out_of_charset_character_is_rejected_naming_it():
    from beam_preprocess.contract import charset as cs
    from beam_preprocess.contract import dgrl
    index = {c: i for i, c in enumerate(cs.Charset.named("gb2312+lines").chars)}
    image = np.full((40, 120), 255, np.uint8)
    image[10:30, 10:110] = 20
    line = dgrl.DgrlLine("宀宬安", (), 0, 0, image, 77, 3)
    f = transforms.InputFile("p.dgrl", "p.dgrl", "dgrl", 1, "0001", "train")
    out = transforms.dgrl_line_outcome(line, f, index, transforms.JobConfig("lines", "unused"))
    assert out.reason == "line_has_unknown_chars"
    assert out.detail == "not in the charset: '宬' (U+5BAC)"
    assert out.record(f)["text"] == "宀宬安" and out.record(f)["line"] == 3


def test_an_output_url_without_a_beam_filesystem_is_a_one_line_error(tmp_path, capsys):
    """The old job ran the pipeline, then died in WriteShard with a traceback (as it does for
    gs:// when apache-beam[gcp] is not installed)."""
    gnt.write_gnt(str(tmp_path / "0001-c.gnt"), [("啊", np.zeros((4, 4), np.uint8))])
    code = pipeline.main(["--input", str(tmp_path / "0001-c.gnt"), "--output",
                          "nosuchfs://bucket/out"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert ("hccr-preprocess: error: --output nosuchfs://bucket/out: no Beam filesystem for "
            "nosuchfs:// is installed here") in err
