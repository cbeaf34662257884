"""What a user sees while long work runs: the Beam job's progress lines (and the pointer to a
remote runner's UI), the progress bar of hccr-synth and hccr-eval, the trainer's choice between
a progress bar and one line per epoch, and an evaluation cache that no longer makes TF warn on
every pass."""
import io
import os
import re
import subprocess
import sys
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from beam_preprocess import progress
from beam_preprocess.contract import gnt
from beam_preprocess.job import job_progress, pipeline
from tests.test_pipeline import MULTI_PROCESSING, glyph, make_writers  # noqa: E402

PROGRESS = re.compile(r"progress: files (\d+)/(\d+), ([\d,]+) samples \(([\d,]+)/s\), "
                      r"([\d,]+) rejected, \d+ s")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# === The Beam job ===


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_reporter_prints_a_line_per_interval_in_logs_and_rewrites_in_place_on_a_terminal(
        tmp_path):
    job_progress.write_task_progress(str(tmp_path), "train-00000",
                                     {"files": 2, "read": 1500, "written": 1490, "rejected": 10})
    job_progress.write_task_progress(str(tmp_path), "train-00001",
                                     {"files": 1, "read": 500, "written": 500, "rejected": 0})
    (tmp_path / "train-00002.json").write_text("{half a fil")  # being replaced: skipped
    log = io.StringIO()
    with job_progress.ProgressReporter(str(tmp_path), 7, interval_s=0.05, stream=log):
        time.sleep(0.4)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and "\r" not in log.getvalue()  # periodic lines + the last one
    found = PROGRESS.search(lines[-1])
    assert found and found.group(1, 2, 3, 5) == ("3", "7", "2,000", "10"), lines[-1]

    terminal = _Terminal()
    with job_progress.ProgressReporter(str(tmp_path), 7, interval_s=0.05, stream=terminal):
        time.sleep(0.2)
    text = terminal.getvalue()
    assert text.count("\r") >= 2 and text.count("\n") == 1 and text.endswith("\n")


def test_the_local_job_reports_files_samples_rate_and_rejects_without_changing_the_shards(
        tmp_path, capfd):
    inp = tmp_path / "in"
    make_writers(inp, ["1001", "1002", "1003"], per_class=20)  # 120 samples each
    gnt.write_gnt(str(inp / "1004-c.gnt"),
                  [("宀", glyph(np.random.default_rng(0)))])  # out of charset: a reject
    base = ["--input", str(inp / "*.gnt"), "--num-shards", "2"]
    quiet = pipeline.run(base + ["--output", str(tmp_path / "quiet"), "--progress-seconds", "0"])
    assert quiet.ok
    assert "progress:" not in capfd.readouterr().err

    report = pipeline.run(base + ["--output", str(tmp_path / "loud"), "--progress-seconds",
                                  "0.05", *MULTI_PROCESSING])
    assert report.ok, report.summary()
    err = capfd.readouterr().err
    found = [m.groups() for m in PROGRESS.finditer(err)]
    assert found, err
    files, total, samples, _, rejected = found[-1]
    assert (files, total, samples, rejected) == ("4", "4", "361", "1")
    for split_file in sorted(os.listdir(tmp_path / "quiet")):
        if split_file.endswith(".tfrecord"):
            assert ((tmp_path / "quiet" / split_file).read_bytes()
                    == (tmp_path / "loud" / split_file).read_bytes()), split_file
    assert not [n for n in os.listdir(tmp_path / "loud") if "progress" in n]


@pytest.mark.parametrize("runner,flags,expected", [
    ("DataflowRunner", ["--project", "p1", "--region", "europe-west4"],
     "console.cloud.google.com/dataflow/jobs?project=p1 (region europe-west4)"),
    ("FlinkRunner", ["--flink_master", "flink.example:8081"], "http://flink.example:8081"),
    ("SparkRunner", [], "Spark UI"),
    ("apache_beam.runners.dask.dask_runner.DaskRunner",
     ["--dask_client_address", "tcp://127.0.0.1:8786"], "http://127.0.0.1:8787"),
])
def test_other_runners_point_at_their_own_ui(runner, flags, expected):
    options = PipelineOptions(["--runner", runner, *flags])
    hint = job_progress.runner_ui_hint(runner, options)
    assert hint.startswith("progress: see the ") and expected in hint, hint


def test_negative_progress_interval_is_refused(tmp_path):
    make_writers(tmp_path / "in", ["1001"])
    with pytest.raises(pipeline.InputError, match="--progress-seconds"):
        pipeline.run(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                      "--progress-seconds", "-1"])


# === hccr-synth and hccr-eval: beam_preprocess/progress.py (tqdm) ===


def _count_to(bar, total, pause_s=0.0):
    for _ in range(total):
        time.sleep(pause_s)
        bar.update(1)
    bar.close()


def test_progress_bar_prints_plain_periodic_lines_in_logs():
    log = io.StringIO()
    _count_to(progress.progress_bar(10, "eval test", unit="ex", stream=log,
                                    log_interval_s=0.05), 10, pause_s=0.03)
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert len(lines) >= 4 and all(line.startswith("eval test: ") for line in lines), lines
    assert " 0/10 " in lines[0] and " 10/10 " in lines[-1]
    assert sum(" 10/10 " in line for line in lines) == 1  # the final count once, not twice
    assert "ex/s" in lines[-1]


def test_progress_bar_in_logs_waits_its_interval_between_lines():
    log = io.StringIO()
    _count_to(progress.progress_bar(1000, "hccr-synth", stream=log), 1000)  # well under 5 s
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and " 0/1000 " in lines[0] and " 1000/1000 " in lines[1], lines


def test_progress_bar_redraws_in_place_on_a_terminal_and_can_be_quiet():
    terminal = _Terminal()
    _count_to(progress.progress_bar(10, "eval test", stream=terminal), 10, pause_s=0.03)
    text = terminal.getvalue()
    assert text.count("\r") >= 2 and text.count("\n") == 1 and text.endswith("\n")
    assert "10/10" in text.rsplit("\r", 1)[-1]

    quiet = io.StringIO()
    _count_to(progress.progress_bar(10, "eval test", stream=quiet, enabled=False), 10)
    assert quiet.getvalue() == ""


# === Training ===


def test_fit_verbosity_is_a_bar_on_a_terminal_and_a_line_per_epoch_in_logs():
    from trainers.training import callbacks, configs
    assert configs.Config().verbose == "auto"
    assert callbacks.fit_verbosity("auto", _Terminal()) == 1
    assert callbacks.fit_verbosity("auto", io.StringIO()) == 2
    assert callbacks.fit_verbosity(0, _Terminal()) == 0
    assert callbacks.fit_verbosity(2, _Terminal()) == 2
    assert configs.override(configs.Config(), ["verbose=1"]).verbose == 1
    assert configs.override(configs.Config(), ["verbose=auto"]).verbose == "auto"
    with pytest.raises(ValueError, match="verbose"):
        configs.override(configs.Config(), ["verbose=bar"])


# === Quiet logs ===

_CACHE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from trainers.training import input_pipeline as ip

    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    labels = np.arange(40) % 3
    source = ip.DataSource(task="chars", image_height=8, image_width=8, num_classes=3,
                           arrays={"test": (images, labels)}, counts={"test": 40})

    def labels_of(ds):
        return [int(v) for _, y in ds for v in y.numpy()]

    plain = ip.make_dataset(source, "test", batch_size=4, training=False, take_batches=3)
    cached = ip.make_dataset(source, "test", batch_size=4, training=False, take_batches=3,
                             cache=True)
    expected = labels_of(plain)
    for _ in range(3):  # three evaluation passes, as three epochs would make
        assert labels_of(cached) == expected
    print("=== control ===", file=sys.stderr, flush=True)
    import tensorflow as tf
    control = tf.data.Dataset.from_tensor_slices(labels).cache().batch(4).take(3)
    for _ in range(2):
        list(control)
""")


def test_evaluation_cache_is_read_fully_so_tf_does_not_warn_every_epoch():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", PYTHONPATH=REPO)
    run = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    ours, control = run.stderr.split("=== control ===")
    warning = "did not fully read the dataset being cached"
    assert warning in control  # the warning reaches this log when it happens
    assert warning not in ours, ours[-3000:]


def test_beam_does_not_warn_about_yield_and_return_in_the_charset_scan():
    # Beam warns "Using yield and return in the process method" for a FlatMap function whose
    # `return` line carries anything after it, a comment included.
    from apache_beam.transforms.core import _check_fn_use_yield_and_return

    from beam_preprocess.job import transforms
    assert _check_fn_use_yield_and_return(transforms.scan_characters) is False
