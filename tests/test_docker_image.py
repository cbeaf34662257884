"""launch/docker/Dockerfile: the image that k8s manifests and Beam DOCKER workers name.

No Docker engine runs here, so the Dockerfile is checked against the repository (what it copies
exists, its pins agree with requirements/, it provides what the rendered jobs start) and built
for real only where `docker info` answers.
"""
import os
import re
import shutil
import subprocess

import pytest

from launch import k8s, train_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, "launch", "docker", "Dockerfile")


def _instructions():
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = open(DOCKERFILE, encoding="utf-8").read()
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [tuple(line.strip().split(None, 1)) for line in logical]


def _args():
    return dict(arg.split("=", 1) for op, arg in _instructions() if op == "ARG" and "=" in arg)


def _pin(name):
    constraints = open(os.path.join(REPO, "requirements", "constraints.txt")).read()
    return re.search(rf"^{re.escape(name)}==(\S+)", constraints, re.M).group(1)


def test_every_copied_path_is_in_the_repository():
    sources = []
    for op, arg in _instructions():
        if op == "COPY" and not arg.startswith("--from"):
            sources += arg.split()[:-1]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert os.path.exists(os.path.join(REPO, source)), source
    # Every package setup.py installs is copied, or `pip install -e .` would miss it.
    copied = {s.rstrip("/") for s in sources}
    for package in ("beam_preprocess", "models", "trainers", "launch"):
        assert package in copied


def test_beam_harness_matches_the_pinned_beam_and_python():
    args = _args()
    assert args["BEAM_SDK_IMAGE"] == f"apache/beam_python3.11_sdk:{_pin('apache-beam')}"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-")
    instructions = _instructions()
    assert ("COPY", "--from=beam_sdk /opt/apache/beam /opt/apache/beam") in instructions
    assert instructions[-1] == ("ENTRYPOINT", '["/opt/apache/beam/boot"]')


def test_the_environment_comes_from_setup_env_with_mpi():
    runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
    # Open MPI is installed by default; the image needs no SLURM test cluster.
    assert "bash scripts/setup_env.sh" in runs and "HCCR_WITHOUT_MPI" not in runs
    assert "HCCR_SKIP_CLUSTER=1" in runs
    # Horovod's build needs a compiler and cmake; MPIJob workers need sshd and its run dir.
    for package in ("build-essential", "cmake", "openssh-server", "openssh-client"):
        assert package in runs
    assert "/run/sshd" in runs
    env = " ".join(arg for op, arg in _instructions() if op == "ENV")
    assert "/opt/hccr/.venv/bin" in env and "OMPI_ALLOW_RUN_AS_ROOT=1" in env


def test_the_mpijob_worker_command_is_what_the_image_provides():
    job = train_job.TrainJob(config="smoke", data="/data/chars", workdir="/runs/smoke")
    manifest = k8s.mpijob(job, "registry/hccr:0.1.0", workers=2)
    worker = manifest["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert worker["command"][0] == "/usr/sbin/sshd"  # from openssh-server, see above
    launcher = manifest["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    assert launcher["containers"][0]["command"][0] == "mpirun"  # setup_env.sh: Open MPI by default


def test_launchers_say_how_to_build_the_image(capsys):
    from launch import cli
    with pytest.raises(SystemExit):
        cli.main(["k8s", "--help"])
    assert "launch/docker/Dockerfile" in capsys.readouterr().out
    job = train_job.TrainJob(config="smoke", data="/data/chars", workdir="/runs/smoke")
    manifest = k8s.k8s_plan(job, "registry/hccr:0.1.0").text
    assert "docker build -f launch/docker/Dockerfile -t registry/hccr:0.1.0 ." in manifest


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("docker") is None
                    or subprocess.run(["docker", "info"], capture_output=True).returncode != 0,
                    reason="no Docker engine answers `docker info` (only the client is here)")
def test_image_builds_and_runs_the_cli():
    tag = "hccr-test:ci"
    subprocess.run(["docker", "build", "-f", DOCKERFILE, "-t", tag, REPO], check=True,
                   timeout=3600)
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "hccr-train", tag, "--help"],
                         check=True, capture_output=True, text=True).stdout
    assert "--config" in out
    check = subprocess.run(["docker", "run", "--rm", "--entrypoint", "horovodrun", tag,
                            "--check-build"], check=True, capture_output=True, text=True).stdout
    assert "[X] TensorFlow" in check and "[X] MPI" in check and "[X] Gloo" in check
