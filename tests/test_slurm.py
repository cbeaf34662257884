"""The SLURM scripts `hccr-launch slurm` renders, submitted with sbatch to a real SLURM cluster
on this machine (the `slurm_cluster` fixture): Horovod over MPI (srun --mpi=pmix, one node,
two tasks), Horovod over Gloo (two nodes), MultiWorkerMirroredStrategy (two nodes), a world
that cannot join refused with one line, preemption and requeue resuming from the checkpoint,
and an sbatch the cluster rejects reported in one line.

Each training job asserts: the job COMPLETED, metrics.json counts every task as a replica,
every process ends with the same weights, and only the chief wrote (each checkpoint and the
final line are logged once, by the process that writes them).
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time

import pytest

from launch import cli
from launch.submit import horovod_build
from tests import tiny_data
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# The smallest run that still trains every part: LeNet, one epoch of 4 steps (a checkpoint at
# step 2 and at the end), no evaluation or augmentation.
TRAIN_FLAGS = ["--config", "smoke", "--set", "model=lenet", "--set", "epochs=1",
               "--set", "eval_split=", "--set", "augment=false", "--precision", "float32"]
JOB_TIMEOUT = 600  # seconds; about 75 s for a two-task job when other tests share the cores


@pytest.fixture(scope="module")
def chars(tmp_path_factory) -> str:
    return tiny_data.write_chars(tmp_path_factory.mktemp("slurm-data") / "chars",
                                 num_classes=4, image_size=32)


def _horovod_build() -> dict:
    build = horovod_build()
    if build is None:
        pytest.skip("Horovod is not installed in this environment (bash scripts/setup_env.sh)")
    return build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(tmp_path: pathlib.Path, *flags: str, command=()) -> str:
    """`hccr-launch slurm FLAGS --dry-run --out job.sbatch`: the script a user submits."""
    script = tmp_path / "job.sbatch"
    argv = ["slurm", *flags, "--dry-run", "--out", str(script)]
    if command:
        argv += ["--", *command]
    assert cli.main(argv) == 0
    return str(script)


def submit(cluster, tmp_path, script: str, timeout: float = JOB_TIMEOUT) -> tuple[dict, str]:
    job_id = cluster.sbatch(script, cwd=str(tmp_path), env={"PYTHONPATH": str(REPO)})
    fields = cluster.wait(job_id, timeout)
    return fields, pathlib.Path(fields["StdOut"]).read_text(errors="replace")


def final_metrics(log: str) -> list[dict]:
    """The metrics every process prints at the end (launchers prefix the lines, and mpirun
    may put two ranks' output on one line)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := log.find('{"', at)) != -1:
        try:
            value, at = decoder.raw_decode(log, at)
        except ValueError:
            at += 1
            continue
        if isinstance(value, dict) and "num_replicas" in value:
            found.append(value)
    return found


def assert_one_world(fields: dict, log: str, workdir: pathlib.Path, processes: int,
                     kind: str) -> dict:
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), log[-4000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert (metrics["strategy"], metrics["num_replicas"]) == (kind, processes)
    results = final_metrics(log)
    assert len(results) == processes, log[-4000:]
    assert {r["num_replicas"] for r in results} == {processes}
    digests = {d for r in results for d in r["replica_weight_digests"]}
    assert len(digests) == 1, results  # every process ends with the same weights
    lines = log.splitlines()
    saves = [line for line in lines if "hccr-train: checkpoint at step" in line]
    assert saves and len(saves) == len(set(saves)), saves  # the chief alone saved
    assert sum("hccr-train: done at step" in line for line in lines) == 1
    return metrics


def test_horovod_over_mpi_one_node_two_tasks(slurm_cluster, chars, tmp_path):
    """The default form: `srun --mpi=pmix` starts two tasks that join one Horovod world."""
    if not _horovod_build()["mpi"]:
        pytest.skip("Horovod here is built without MPI (bash scripts/setup_env.sh as root)")
    cluster = slurm_cluster(nodes=1)
    workdir = tmp_path / "run"
    script = render(tmp_path, "--nodes", "1", "--tasks-per-node", "2", *TRAIN_FLAGS,
                    "--data", chars, "--workdir", str(workdir))
    fields, log = submit(cluster, tmp_path, script)
    assert "srun --mpi=pmix" in pathlib.Path(script).read_text()
    assert_one_world(fields, log, workdir, 2, "horovod")
    assert "hccr: rank 1 of 2 (local rank 1)" in log


def test_horovod_over_gloo_two_nodes(slurm_cluster, chars, tmp_path):
    """horovodrun on the first node starts one rank per node from the job's hostfile."""
    if not _horovod_build()["gloo"]:
        pytest.skip("Horovod here is built without Gloo")
    cluster = slurm_cluster(nodes=2)
    workdir = tmp_path / "run"
    script = render(tmp_path, "--nodes", "2", "--gloo", *TRAIN_FLAGS, "--data", chars,
                    "--workdir", str(workdir))
    fields, log = submit(cluster, tmp_path, script)
    assert fields["NumNodes"] == "2"
    assert_one_world(fields, log, workdir, 2, "horovod")
    hostfile = (tmp_path / f"hccr-hosts-{fields['JobId']}.txt").read_text().split("\n")
    assert sorted(filter(None, hostfile)) == sorted(f"{n} slots=1" for n in cluster.node_names)


def test_multiworker_two_nodes_each_task_its_own_port(slurm_cluster, chars, tmp_path):
    """One worker per node; the two "nodes" share this host, so the workers only run when
    each task listens on its own port (base port + task id)."""
    cluster = slurm_cluster(nodes=2)
    workdir = tmp_path / "run"
    port = _free_port()
    script = render(tmp_path, "--nodes", "2", "--strategy", "multi_worker", "--port",
                    str(port), *TRAIN_FLAGS, "--data", chars, "--workdir", str(workdir))
    fields, log = submit(cluster, tmp_path, script)
    assert_one_world(fields, log, workdir, 2, "multi_worker")
    assert f":{port}" in log and f":{port + 1}" in log


def test_tasks_that_cannot_join_one_world_are_refused(slurm_cluster, chars, tmp_path):
    """Two srun tasks that nothing joins (here: --strategy one_device; a Horovod built without
    MPI under srun is the same case) would each train alone on the same work directory.
    Every task stops before writing, with one line naming both numbers.

    (srun without --mpi=pmix and a Horovod built with MPI is refused by Open MPI itself:
    "The application appears to have been direct launched using srun ...".)"""
    cluster = slurm_cluster(nodes=1)
    workdir = tmp_path / "run"
    train = ["hccr-train", *TRAIN_FLAGS, "--data", chars, "--workdir", str(workdir),
             "--strategy", "one_device"]
    script = render(tmp_path, "--nodes", "1", "--tasks-per-node", "2", command=train)
    fields, log = submit(cluster, tmp_path, script)
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] != "0:0", log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("hccr-train: error:")]
    assert errors, log[-3000:]
    assert errors[0] == (
        "hccr-train: error: srun (SLURM_STEP_NUM_TASKS=2) started 2 process(es) but this one "
        "joined a one_device world of 1: --strategy one_device trains in each process alone "
        "(all writing the same work directory): use --strategy horovod or multi_worker, or "
        "start one process")
    assert "Traceback" not in log
    assert not workdir.exists()


def _checkpoint_step(workdir: pathlib.Path) -> int:
    try:
        return json.loads((workdir / "checkpoints" / "checkpoint.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def _wait_for_step(cluster, job_id: int, workdir: pathlib.Path, after: int,
                   timeout: float = JOB_TIMEOUT) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = _checkpoint_step(workdir)
        if step > after:
            return step
        fields = cluster.job(job_id)
        assert fields["JobState"] in ("PENDING", "RUNNING", "CONFIGURING"), (
            fields, pathlib.Path(fields["StdOut"]).read_text(errors="replace")[-4000:])
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint after step {after} within {timeout} s")


def test_preemption_and_requeue_resume_at_the_same_step(slurm_cluster, chars, tmp_path):
    """USR1 (what `--signal` sends before the time limit), then `scontrol requeue`: each time
    the trainer checkpoints, the job comes back, resumes, and ends at the step count of an
    unbroken run with the optimizer's step count to match."""
    if not _horovod_build()["mpi"]:
        pytest.skip("Horovod here is built without MPI (bash scripts/setup_env.sh as root)")
    cluster = slurm_cluster(nodes=1)
    workdir = tmp_path / "run"
    steps = 2 * 6  # epochs x steps_per_epoch: an unbroken run ends at this step
    train = ["python", "-m", "tests.slow_train", "0.5", "--config", "smoke", "--data", chars,
             "--workdir", str(workdir), "--set", "model=lenet", "--set", "epochs=2",
             "--set", "steps_per_epoch=6", "--set", "eval_split=", "--set", "augment=false",
             "--set", "checkpoint_every_steps=2", "--precision", "float32",
             "--strategy", "horovod"]
    script = render(tmp_path, "--nodes", "1", "--tasks-per-node", "2", command=train)
    text = pathlib.Path(script).read_text()
    assert "#SBATCH --signal=B:USR1@300" in text and "#SBATCH --requeue" in text
    job_id = cluster.sbatch(script, cwd=str(tmp_path), env={"PYTHONPATH": str(REPO)})

    first = _wait_for_step(cluster, job_id, workdir, after=0)
    subprocess.run(["scancel", "--signal=USR1", "--batch", str(job_id)], env=cluster.env,
                   check=True)
    cluster.start_requeued_now(job_id, restarts=1)
    stopped_at = _checkpoint_step(workdir)
    assert first <= stopped_at < steps

    # SLURM's own requeue (as a preemption does): SIGTERM to every process, SIGKILL after
    # KillWait; the trainer checkpoints at its next step if it can, else the last periodic
    # checkpoint stands.
    _wait_for_step(cluster, job_id, workdir, after=stopped_at)
    cluster.scontrol("requeue", str(job_id))
    cluster.start_requeued_now(job_id, restarts=2)

    fields = cluster.wait(job_id, JOB_TIMEOUT)
    log = pathlib.Path(fields["StdOut"]).read_text(errors="replace")
    assert (fields["JobState"], fields["ExitCode"], fields["Restarts"]) == (
        "COMPLETED", "0:0", "2"), log[-4000:]
    assert "hccr-train: stopped by SIGUSR1 at step" in log
    assert "requeueing job" in log and "DUE TO JOB REQUEUE" in log
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["step"] == metrics["optimizer_iterations"] == steps
    assert stopped_at < metrics["resumed_from_step"] < steps
    assert metrics["num_replicas"] == 2 and metrics["weights_in_sync"]


def test_sbatch_rejection_is_one_line(slurm_cluster, tmp_path, capsys, monkeypatch):
    cluster = slurm_cluster(nodes=1)
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)
    code = cli.main(["slurm", "--config", "smoke", "--partition", "nope", "--setup", "",
                     "--out", str(tmp_path / "job.sbatch")])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("hccr-launch: error:")]
    assert errors == [
        "hccr-launch: error: sbatch rejected the job: Batch job submission failed: Invalid "
        "partition name specified; fix the option it names (the script's #SBATCH lines, e.g. "
        "--partition: `sinfo` lists the partitions; --account, --time, --gres); the script is "
        f"kept at {tmp_path / 'job.sbatch'}"], err
    assert os.path.exists(tmp_path / "job.sbatch")
