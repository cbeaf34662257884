"""The Beam job on a real Dask cluster (a scheduler and two worker processes on 127.0.0.1),
and the guards a runner without counters, that computes only the last step, needs.

The cluster tests skip cleanly when Dask (`apache-beam[dask]`) is not installed.
"""
import contextlib
import glob
import io
import json
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

import beam_preprocess  # noqa: E402
from beam_preprocess.contract import dgrl, gnt, schema
from beam_preprocess.job import pipeline, runners, transforms
from launch import beam as beam_launch  # noqa: E402
from launch import submit as launch_submit  # noqa: E402
from tests import tiny_data  # noqa: E402
from tests.process_groups import stop_in_reverse  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARS = "啊阿埃挨哎唉"  # GB2312 level 1
OUT_OF_CHARSET = "宀"   # not in gb2312-1: a reject in every chars run


# === Inputs and outputs ===


def _glyph(rng, label: int) -> np.ndarray:
    return tiny_data.char_pattern(label, int(rng.integers(24, 48)), rng)


def write_char_inputs(directory) -> str:
    """GNT files of 3 train writers and 1 test writer, with one out-of-charset sample and one
    file whose last record is cut short (a malformed tail): both end up in rejects/."""
    os.makedirs(directory, exist_ok=True)
    for writer in ("1001", "1002", "1003", "1241"):
        rng = np.random.default_rng(int(writer))
        samples = [(c, _glyph(rng, i)) for _ in range(2) for i, c in enumerate(CHARS)]
        if writer == "1002":
            samples.append((OUT_OF_CHARSET, _glyph(rng, 7)))
        gnt.write_gnt(os.path.join(directory, f"{writer}-c.gnt"), samples)
    path = os.path.join(directory, "1003-c.gnt")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-50])
    return str(directory)


def write_line_inputs(directory) -> str:
    """Two DGRL pages (one line without a label: a reject) and one GNT file that
    --synth-lines composes lines from."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(11)
    for page, texts in (("0001-P01", ("啊阿埃", "挨哎唉啊")), ("0002-P01", ("阿宀埃", "", "唉挨"))):
        lines = [(text, 10 + 50 * k, 10,
                  tiny_data.line_image([CHARS.find(c) % 6 for c in text or "啊"], 40, rng))
                 for k, text in enumerate(texts)]
        dgrl.write_dgrl(os.path.join(directory, f"{page}.dgrl"), page_height=200,
                        page_width=300, lines=lines)
    gnt.write_gnt(os.path.join(directory, "0003-c.gnt"),
                  [(c, _glyph(rng, i)) for i, c in enumerate(CHARS)])
    return str(directory)


def written_files(out_dir) -> dict:
    """Every shard and rejects file, by relative path, as bytes."""
    paths = (glob.glob(os.path.join(out_dir, "*.tfrecord*")) +
             glob.glob(os.path.join(out_dir, schema.REJECTS_DIR, "*.jsonl")))
    return {os.path.relpath(p, out_dir): open(p, "rb").read() for p in sorted(paths)}


def comparable_metadata(out_dir) -> dict:
    with open(os.path.join(out_dir, schema.METADATA_FILE), encoding="utf-8") as f:
        md = json.load(f)
    return {k: v for k, v in md.items() if k not in ("command", "created")}


def run_quietly(argv) -> pipeline.JobReport:
    with contextlib.redirect_stdout(io.StringIO()):
        return pipeline.run([str(a) for a in argv])


# === A real Dask cluster ===


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """`dask scheduler` / `dask worker` processes, each in its own process group, stopped by
    pid; their output goes to log files named in failures."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.procs = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "wb")
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=self.log_dir,
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def scheduler(self, name: str = "scheduler") -> str:
        port = _free_port()
        self.start(name, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                   "--no-dashboard")
        address = f"tcp://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return address
            except OSError:
                self.check_alive()
                if time.monotonic() > deadline:
                    pytest.fail(f"the Dask scheduler did not listen on {address} in 60 s; "
                                f"see {self.log_dir}/{name}.log")
                time.sleep(0.2)

    def worker(self, name: str, address: str) -> None:
        self.start(name, "worker", address, "--no-nanny", "--nthreads", "1", "--no-dashboard",
                   "--host", "127.0.0.1", "--local-directory", self.log_dir)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                pytest.fail(f"dask {name} exited with {proc.returncode}; see "
                            f"{self.log_dir}/{name}.log")

    def stop(self) -> None:
        stop_in_reverse([proc for _, proc in self.procs])


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    pytest.importorskip("distributed", reason="Dask is not installed: pip install "
                                              "'apache-beam[dask]'")
    processes = DaskProcesses(str(tmp_path_factory.mktemp("dask")))
    try:
        yield processes
    finally:
        processes.stop()


@pytest.fixture(scope="module")
def dask_cluster(dask_processes):
    """The address of a scheduler with two single-threaded worker processes."""
    import distributed
    address = dask_processes.scheduler()
    for name in ("worker-1", "worker-2"):
        dask_processes.worker(name, address)
    with distributed.Client(address, timeout=30, set_as_default=False) as client:
        try:
            client.wait_for_workers(2, timeout=90)
        except TimeoutError:
            dask_processes.check_alive()
            pytest.fail(f"two Dask workers did not join {address} in 90 s")
    return address


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """The inputs of both tasks and their outputs from the default (in-process) runner."""
    root = tmp_path_factory.mktemp("default-runs")
    chars_in, lines_in = write_char_inputs(root / "chars-in"), write_line_inputs(root / "lines-in")
    chars_args = ["--input", chars_in, "--num-shards", "2", "--task", "chars"]
    lines_args = ["--input", lines_in, "--task", "lines", "--synth-lines", "3",
                  "--synth-line-chars", "2,4", "--charset", "data"]
    reports = {}
    for task, args in (("chars", chars_args), ("lines", lines_args)):
        reports[task] = run_quietly(args + ["--output", root / f"{task}-default"])
        assert reports[task].ok, reports[task].summary()
        assert reports[task].counters_available
    return {"root": root, "args": {"chars": chars_args, "lines": lines_args},
            "reports": reports}


# === The job on Dask ===


@pytest.mark.slow
def test_dask_shards_are_byte_identical_to_the_default_runner(dask_cluster, default_runs,
                                                              tmp_path):
    root = default_runs["root"]
    for task in ("chars", "lines"):
        out = tmp_path / f"{task}-dask"
        report = run_quietly(default_runs["args"][task] + [
            "--output", out, "--runner", "DaskRunner", "--dask_client_address", dask_cluster])
        assert report.ok, report.summary()
        default = default_runs["reports"][task].metadata
        assert report.metadata["counts"] == default["counts"]
        assert report.metadata["counts"]["rejected"] >= 1  # rejects files are compared too
        assert written_files(out) == written_files(root / f"{task}-default")
        assert comparable_metadata(out) == comparable_metadata(root / f"{task}-default")
        # No counters on Dask: said so, and reconciled from the files instead.
        assert not report.counters_available and report.counters == {}
        summary = report.summary()
        assert "cross-check was not possible" in summary
        assert "counted in the written files" in summary
        assert f"Dask scheduler {dask_cluster}: 2 workers" in summary
        assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporaries


@pytest.mark.slow
def test_launcher_script_runs_the_job_on_dask(dask_cluster, default_runs, tmp_path):
    """`hccr-launch beam dask` renders a script; run as rendered, it writes the same shards."""
    chars_in = default_runs["args"]["chars"][1]
    out = tmp_path / "out"
    plan = beam_launch.beam_plan(beam_launch.BeamJobSpec(
        "dask", [os.path.join(chars_in, "*.gnt")], str(out), task="chars",
        extra=["--num-shards", "2"], dask_address=dask_cluster), setup=[])
    assert f"dask scheduler --port {dask_cluster.rsplit(':', 1)[1]}" in plan.text
    assert f"dask worker {dask_cluster} --nworkers 1 --nthreads 1" in plan.text
    assert beam_launch.DASK_JOBQUEUE_URL in plan.text
    assert beam_launch.DASK_OPERATOR_URL in plan.text
    assert launch_submit.execute(plan, log=io.StringIO()) == 0
    assert written_files(out) == written_files(default_runs["root"] / "chars-default")


@pytest.mark.slow
def test_workers_running_other_code_are_refused(dask_cluster, monkeypatch):
    """A worker keeps the code it imported; after a change it would write other bytes."""
    options = PipelineOptions(["--dask_client_address", dask_cluster])
    assert runners.prepare_dask(options)  # same code: accepted
    monkeypatch.setattr(beam_preprocess, "SOURCE_SHA256", "the driver changed since")
    with pytest.raises(runners.RunnerError, match="2 Dask worker.* run other hccr code"):
        runners.prepare_dask(PipelineOptions(["--dask_client_address", dask_cluster]))


@pytest.mark.slow
def test_scheduler_without_workers_is_one_line(dask_processes):
    address = dask_processes.scheduler("lonely-scheduler")
    options = PipelineOptions(["--dask_client_address", address])
    with pytest.raises(runners.RunnerError) as err:
        runners.prepare_dask(options, wait_for_workers_s=1)
    assert str(err.value) == (f"the Dask scheduler at {address} has no worker after 1 s: start "
                              f"them with `dask worker {address}`")


@pytest.mark.slow
def test_dask_runs_only_the_last_sink_and_the_job_refuses_a_second(dask_cluster, tmp_path,
                                                                   monkeypatch, capsys):
    """The control shows why the guard exists: on Beam's DaskRunner a pipeline with two sinks
    runs one. The job refuses to start such a pipeline on Dask."""
    from apache_beam.runners.dask.dask_runner import DaskRunner
    first, second = tmp_path / "first", tmp_path / "second"
    options = PipelineOptions(["--dask_client_address", dask_cluster])
    p = beam.Pipeline(runner=DaskRunner(), options=options)
    _ = p | "One" >> beam.Create([str(first)]) | "TouchOne" >> beam.Map(_touch)
    _ = p | "Two" >> beam.Create([str(second)]) | "TouchTwo" >> beam.Map(_touch)
    result = p.run()
    result.wait_until_finish()
    runners.close_dask_client(result)
    assert second.exists() and not first.exists()  # the first sink was silently skipped

    build = pipeline.build_pipeline

    def with_second_sink(p, *args, **kwargs):
        metadata = build(p, *args, **kwargs)
        _ = p | "Audit" >> beam.Create(["x"]) | "WriteAudit" >> beam.Map(print)
        return metadata

    monkeypatch.setattr(pipeline, "build_pipeline", with_second_sink)
    chars_in = write_char_inputs(tmp_path / "in")
    assert pipeline.main(["--input", chars_in, "--output", str(tmp_path / "out"), "--runner",
                          "DaskRunner", "--dask_client_address", dask_cluster]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err == ("hccr-preprocess: error: DaskRunner computes only what the pipeline's last "
                   "step (WriteAudit) depends on, and would silently skip these steps: Charset, "
                   "WriteShards, Summarize, WriteMetadata")


def _touch(path):
    open(path, "w").close()
    return path


# === Runner names and unreachable schedulers ===


def test_runner_short_names():
    assert runners.resolve_runner(None) is None
    assert runners.resolve_runner("direct") == "DirectRunner"
    assert runners.resolve_runner("DataflowRunner") == "DataflowRunner"
    assert runners.resolve_runner("apache_beam.runners.portability.fn_api_runner.FnApiRunner")
    with pytest.raises(runners.RunnerError, match="cannot import no_such_module"):
        runners.resolve_runner("no_such_module.Runner")
    with pytest.raises(runners.RunnerError, match="has no class NoSuchRunner"):
        runners.resolve_runner("apache_beam.runners.NoSuchRunner")


def test_unknown_runner_is_one_line_listing_the_known_names(tmp_path, capsys):
    chars_in = write_char_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert pipeline.main(["--input", chars_in, "--output", str(out), "--runner", "Dusk"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("hccr-preprocess: error: unknown --runner 'Dusk'")
    for name in ("DaskRunner", "DataflowRunner", "DirectRunner", "FlinkRunner", "SparkRunner"):
        assert name in err
    assert not out.exists()


def test_dask_runner_by_its_short_name_and_an_unreachable_scheduler(tmp_path, capsys):
    pytest.importorskip("distributed")
    assert runners.resolve_runner("DaskRunner") == runners.DASK_RUNNER
    assert runners.resolve_runner("dask") == runners.DASK_RUNNER
    chars_in = write_char_inputs(tmp_path / "in")
    port = _free_port()  # nothing listens there
    out = tmp_path / "out"
    assert pipeline.main(["--input", chars_in, "--output", str(out), "--runner", "DaskRunner",
                          "--dask_client_address", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"hccr-preprocess: error: cannot reach the Dask scheduler at "
                          f"tcp://127.0.0.1:{port}")
    assert f"`dask scheduler --port {port}`" in err
    assert f"`dask worker tcp://127.0.0.1:{port}`" in err
    assert not out.exists()
    with pytest.raises(runners.RunnerError, match="takes tcp://HOST:PORT"):
        runners.prepare_dask(PipelineOptions(["--dask_client_address", "tcp://nohost"]))


# === The guards, without a cluster ===


def test_steps_not_computed_finds_a_second_sink():
    p = beam.Pipeline()
    _ = p | "A" >> beam.Create([1]) | "SinkA" >> beam.Map(str)
    side = p | "Side" >> beam.Create([2])
    _ = (p | "B" >> beam.Create([3])
         | "SinkB" >> beam.Map(lambda x, s: x + s, beam.pvalue.AsSingleton(side)))
    last, skipped = runners.steps_not_computed(p)
    assert last == "SinkB"
    assert skipped and all(s == "SinkA" or s.startswith("A/") for s in skipped)
    assert "SinkA" in skipped  # the side input "Side" is needed, so not listed
    with pytest.raises(runners.RunnerError, match=r"\(SinkB\) .* skip these steps: A, SinkA$"):
        runners.check_last_step_needs_all(p, runners.DASK_RUNNER)


@pytest.mark.parametrize("charset_chars", [None, list(CHARS)], ids=["from-data", "named"])
def test_the_jobs_own_graph_ends_in_one_step_that_needs_all(charset_chars, tmp_path):
    files = [transforms.InputFile("a.gnt", "a.gnt", "gnt", 1, "1001", "train")]
    tasks = [transforms.ShardTask("train", 0, 1, tuple(files))]
    config = transforms.JobConfig(task="chars", output=str(tmp_path))
    p = beam.Pipeline()
    pipeline.build_pipeline(p, files, tasks, config, {"splits": {}}, charset_chars)
    assert runners.steps_not_computed(p) == ("WriteMetadata", [])


class _NoMetricsResult:
    def metrics(self):
        raise NotImplementedError("collecting metrics will come later!")


def test_no_counters_reconciles_from_the_written_files_and_can_fail(default_runs):
    assert pipeline.query_counters(_NoMetricsResult()) is None
    out = str(default_runs["root"] / "chars-default")
    md = default_runs["reports"]["chars"].metadata
    problems, notes = pipeline.check_accounts(out, md, None, verify=False)
    assert problems == [] and "cross-check was not possible" in notes[0]
    # Metadata that claims one example more than the shards hold, and one reject more than
    # rejects/ holds (self-consistent, so only the files can tell).
    wrong = json.loads(json.dumps(md))
    wrong["splits"]["train"]["num_examples"] += 1
    wrong["counts"]["read"] += 2
    wrong["counts"]["written"] += 1
    wrong["counts"]["rejected"] += 1
    wrong["rejects"]["out_of_charset"] += 1
    assert pipeline.reconcile(wrong, {}) == []
    problems, _ = pipeline.check_accounts(out, wrong, None, verify=False)
    n = md["splits"]["train"]["num_examples"]
    rejected = md["counts"]["rejected"]
    assert problems == [
        f"split train: {n} records in the shards, metadata says {n + 1}",
        f"{rejected} lines in rejects/, metadata says {rejected + 1} rejected"]
    # With counters the files are only counted under --verify.
    counters = {"read": wrong["counts"]["read"], "written": wrong["counts"]["written"],
                "rejected": wrong["counts"]["rejected"]}
    assert pipeline.check_accounts(out, wrong, counters, verify=False) == ([], [])
    report = pipeline.JobReport(out, md, {}, [], notes, 1.0, counters_available=False)
    assert "no Beam counters to cross-check" in report.summary()


def test_missing_outputs_after_a_run_fail_the_job(default_runs, tmp_path, monkeypatch):
    src = default_runs["root"] / "chars-default"
    out = tmp_path / "copy"
    os.makedirs(out)
    for name in os.listdir(src):
        if name.endswith(".tfrecord") or name == schema.CHARSET_FILE:
            with open(src / name, "rb") as f, open(out / name, "wb") as g:
                g.write(f.read())
    tasks = [transforms.ShardTask("train", i, 2) for i in range(2)] + [
        transforms.ShardTask("test", 0, 1)]
    assert pipeline.missing_outputs(str(out), tasks, "") == []
    os.remove(out / "train-00001-of-00002.tfrecord")
    os.remove(out / schema.CHARSET_FILE)
    assert pipeline.missing_outputs(str(out), tasks, "") == [
        f"1 of 3 planned shards are missing after the run, e.g. "
        f"{out / 'train-00001-of-00002.tfrecord'}",
        f"{schema.CHARSET_FILE} was not written"]

    # A run whose last step never ran (no metadata.json) fails with that reason.
    def without_metadata(p, files, tasks, config, static, charset_chars=None, progress_dir=None):
        charset = transforms.named_charset(p, charset_chars)
        return p | "WriteShards" >> transforms.WriteShards(tasks, config, charset)

    monkeypatch.setattr(pipeline, "build_pipeline", without_metadata)
    chars_in = default_runs["args"]["chars"][1]
    report = run_quietly(["--input", chars_in, "--output", tmp_path / "out2"])
    assert not report.ok
    assert any("metadata.json was not written" in p for p in report.problems)
    assert "FAILED" in report.summary()


def test_hccr_launch_beam_dask_dry_run(capsys):
    from launch import cli
    from launch.errors import LaunchError
    assert cli.main(["beam", "dask", "--input", "/shared/in/*.gnt", "--output", "/shared/out",
                     "--dask-address", "sched:9000", "--num-workers", "4", "--dry-run", "--",
                     "--num-shards", "64"]) == 0
    text = capsys.readouterr().out
    assert ("exec hccr-preprocess --input '/shared/in/*.gnt' --output /shared/out \\\n"
            "    --runner DaskRunner --dask_client_address tcp://sched:9000 \\\n"
            "    --num-shards 64\n") in text
    assert "#   dask scheduler --port 9000\n" in text
    assert "#   dask worker tcp://sched:9000 --nworkers 4 --nthreads 1" in text
    assert "dask-jobqueue" in text and "Dask operator" in text
    plan = beam_launch.beam_plan(beam_launch.BeamJobSpec("dask", ["/s/*.gnt"], "/s/out"))
    assert [(r.kind, r.name) for r in plan.requires] == [
        ("program", "hccr-preprocess"), ("module", "distributed"),
        ("endpoint", "localhost:8786")]
    with pytest.raises(LaunchError, match="--dask-address takes tcp://HOST:PORT"):
        beam_launch.beam_plan(beam_launch.BeamJobSpec("dask", ["/s/*.gnt"], "/s/out",
                                                      dask_address="tls://s:1"))
