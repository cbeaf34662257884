"""Horovod over MPI outside SLURM (`hccr-launch local --mpi`, horovodrun --mpi running mpirun),
the world check every distributed run makes before it writes anything, hccr-launch refusing a
Horovod mode the installed Horovod cannot run, and a stop signal ending a run with a
checkpoint and exit status 75 (tests/test_slurm.py has the same under SLURM)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from launch import cli, submit
from trainers.training import strategy


def _mpi_horovod():
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not installed (Debian's openmpi-bin; bash scripts/setup_env.sh)")
    build = submit.horovod_build()
    if build is None or not build["mpi"]:
        pytest.skip("Horovod here is not built with MPI (bash scripts/setup_env.sh as root)")


def untagged(out: str) -> str:
    """mpirun's output without its `[job,rank]<stdout>:` tags, which it puts before every
    write of an unbuffered process (so one line of a rank may carry several)."""
    return re.sub(r"\[\d+,\d+\]<std(?:out|err)>:", "", out)


# === The world check ===


@pytest.mark.parametrize("environ, launched", [
    ({}, None),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, None),  # a batch script, not an srun task
    ({"SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "2"}, (2, "srun (SLURM_STEP_NUM_TASKS=2)")),
    ({"SLURM_STEP_NUM_TASKS": "1", "HOROVOD_SIZE": "2"}, (2, "horovodrun (HOROVOD_SIZE=2)")),
    ({"OMPI_COMM_WORLD_SIZE": "3", "SLURM_STEP_NUM_TASKS": "1"},
     (3, "mpirun (OMPI_COMM_WORLD_SIZE=3)")),
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, (2, "the PMI launcher (PMI_SIZE=2)")),
])
def test_launched_world_innermost_launcher_first(environ, launched):
    assert strategy.launched_world(environ) == launched


def test_world_mismatch_names_both_numbers_and_the_cause():
    strategy.check_world("horovod", 2, {"OMPI_COMM_WORLD_SIZE": "2"}, mpi_built=True)
    strategy.check_world("one_device", 1, {})
    strategy.check_world("one_device", 1, {"SLURM_STEP_NUM_TASKS": "1"})
    cases = [
        (("horovod", 1, {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, False),
         "mpirun (OMPI_COMM_WORLD_SIZE=2) started 2 process(es) but this one joined a horovod "
         "world of 1: Horovod is built without MPI"),
        (("horovod", 1, {"SLURM_STEP_NUM_TASKS": "2", "PMIX_RANK": "0"}, False),
         "Horovod is built without MPI, so under an MPI launcher (PMIX_RANK is set)"),
        (("horovod", 1, {"SLURM_STEP_NUM_TASKS": "2"}, True),
         "srun started the tasks without an MPI plugin"),
        (("multi_worker", 3, {"SLURM_STEP_NUM_TASKS": "2"}, None),
         "started 2 process(es) but this one joined a multi_worker world of 3: every process "
         "needs the same TF_CONFIG"),
        (("one_device", 1, {"HOROVOD_SIZE": "2"}, None),
         "--strategy one_device trains in each process alone"),
    ]
    for (kind, joined, environ, mpi_built), message in cases:
        with pytest.raises(strategy.WorldMismatch, match="^.*$") as info:
            strategy.check_world(kind, joined, environ, mpi_built=mpi_built)
        assert message in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value, ValueError)  # hccr-train: one line, exit status 2


def test_auto_is_horovod_for_several_srun_tasks(monkeypatch):
    for name in ("TF_CONFIG", *strategy.HOROVOD_RANK_VARIABLES,
                 *(n for n, _ in strategy.LAUNCHER_SIZE_VARIABLES)):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert strategy.detect() in ("one_device", "mirrored")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    assert strategy.detect() == "horovod"  # whose world check then says what is missing
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    monkeypatch.setenv("PMIX_RANK", "0")
    assert strategy.detect() == "horovod"


def test_a_process_that_joins_alone_stops_before_writing(tmp_path):
    """A launcher says two processes were started, only this one exists: hccr-train stops
    with one line and exit status 2, and the work directory stays untouched."""
    from tests import tiny_data
    data = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32)
    workdir = tmp_path / "run"
    env = dict(os.environ, SLURM_STEP_NUM_TASKS="2", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "trainers.training.main", "--config", "smoke",
                             "--data", data, "--workdir", str(workdir), "--strategy",
                             "one_device"], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "hccr-train: error: srun (SLURM_STEP_NUM_TASKS=2) started 2 process(es) but this one "
        "joined a one_device world of 1: --strategy one_device trains in each process alone "
        "(all writing the same work directory): use --strategy horovod or multi_worker, or "
        "start one process")
    assert not workdir.exists()


# === hccr-launch and the installed Horovod ===


@pytest.mark.parametrize("argv, build, message", [
    (["local", "--mpi"], {"mpi": False, "gloo": True}, "--mpi needs Horovod built with MPI"),
    (["slurm"], {"mpi": False, "gloo": True}, "--mpi needs Horovod built with MPI"),
    (["horovod", "--hosts", "a:2", "--gloo"], {"mpi": True, "gloo": False},
     "--gloo needs Horovod built with Gloo"),
])
def test_launch_refuses_a_mode_the_installed_horovod_lacks(argv, build, message, monkeypatch,
                                                           capsys):
    monkeypatch.setattr(submit, "horovod_build", lambda: build)
    assert cli.main(argv + ["--config", "smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hccr-launch: error: {message}") and "\n" not in err
    assert "pip install --no-build-isolation" in err and "scripts/setup_env.sh" in err
    # A script that brings its own environment (--setup), or a multi_worker job, is not
    # checked against this one; nor is anything when Horovod is not installed here.
    assert cli.main(argv + ["--config", "smoke", "--dry-run", "--setup", "module load x"]) == 0
    monkeypatch.setattr(submit, "horovod_build", lambda: None)
    assert cli.main(argv + ["--config", "smoke", "--dry-run"]) == 0


def test_installed_horovod_build_is_read_without_initialising_it():
    build = submit.horovod_build()
    if build is None:
        pytest.skip("Horovod is not installed here")
    assert set(build) == {"mpi", "gloo"} and build["gloo"]


# === mpirun for real ===


def test_local_mpi_runs_two_ranks(capfd):
    _mpi_horovod()
    # One write per rank: print() of several items under PYTHONUNBUFFERED (scripts/test.sh)
    # writes them one by one, and the two ranks' words interleaved ("RANKRANK 1 2\n 0 2").
    code = ("import os; os.write(1, ('RANK %s %s\\n' % (os.environ['OMPI_COMM_WORLD_RANK'], "
            "os.environ['OMPI_COMM_WORLD_SIZE'])).encode())")
    assert cli.main(["local", "--mpi", "--np", "2", "--", sys.executable, "-c", code]) == 0
    out = untagged(capfd.readouterr().out)
    assert "RANK 0 2" in out and "RANK 1 2" in out


@pytest.mark.slow
def test_local_mpi_trains_one_two_rank_world(tmp_path, capfd):
    """`hccr-launch local --mpi --np 2 --config smoke`: horovodrun --mpi runs mpirun, and the
    two ranks train one world (about 40 s on two shared cores)."""
    _mpi_horovod()
    from tests import tiny_data
    data = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32)
    workdir = tmp_path / "run"
    assert cli.main(["local", "--mpi", "--np", "2", "--config", "smoke", "--data", data,
                     "--workdir", str(workdir), "--set", "model=lenet", "--set", "epochs=1",
                     "--set", "eval_split=", "--set", "augment=false",
                     "--precision", "float32"]) == 0
    out = untagged(capfd.readouterr().out)
    from tests.test_slurm import final_metrics
    results = final_metrics(out)
    assert len(results) == 2
    assert all(r["strategy"] == "horovod" and r["num_replicas"] == 2 for r in results)
    assert len({d for r in results for d in r["replica_weight_digests"]}) == 1
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["num_replicas"] == 2 and metrics["weights_in_sync"]


@pytest.mark.slow
def test_a_stop_signal_checkpoints_and_exits_75(tmp_path):
    """SIGUSR1 to a plain hccr-train: checkpoint at the next step, exit 75, and a rerun of
    the same command resumes there and ends at the unbroken run's step count."""
    from tests import tiny_data
    data = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32)
    workdir = tmp_path / "run"
    argv = [sys.executable, "-m", "tests.slow_train", "0.3", "--config", "smoke", "--data",
            data, "--workdir", str(workdir), "--set", "model=lenet", "--set", "epochs=2",
            "--set", "steps_per_epoch=6", "--set", "eval_split=", "--set", "augment=false",
            "--set", "checkpoint_every_steps=2", "--precision", "float32",
            "--strategy", "one_device"]
    from tests.conftest import REPO
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    state = workdir / "checkpoints" / "checkpoint.json"
    import time
    deadline = time.monotonic() + 240
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGUSR1)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 75, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("hccr-train: stopped by SIGUSR1 at step ") and "resume" in line
    stopped = json.loads(state.read_text())["step"]
    assert 0 < stopped < 12 and not (workdir / "metrics.json").exists()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == stopped
    assert metrics["step"] == metrics["optimizer_iterations"] == 12
