"""Runs or submits a rendered `Plan`: checks what it needs first, writes its file, then runs
`bash FILE`, `sbatch FILE` or `kubectl apply -f FILE` and returns that command's exit status.
A submission the scheduler rejects (`sbatch`, `kubectl apply`) raises one LaunchError line
with the scheduler's reason.

`horovod_build()` says how the Horovod of this Python was built (MPI, Gloo) without
initialising it, so that `hccr-launch` refuses a mode the installed Horovod cannot run.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import cache

from launch.errors import LaunchError
from launch.plan import Plan, Requirement


def search_path(environ=None) -> str:
    """PATH with this Python's bin directory first: the scripts activate this environment."""
    environ = os.environ if environ is None else environ
    return os.pathsep.join([os.path.dirname(sys.executable), environ.get("PATH", os.defpath)])


def _reachable(endpoint: str, timeout: float) -> str | None:
    """None when host:port accepts a TCP connection, else why not."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__


def missing(requires: Sequence[Requirement], path: str | None = None,
            timeout: float = 3.0) -> list[str]:
    """One message per requirement that is not met (empty when all are)."""
    path = search_path() if path is None else path
    problems = []
    for req in requires:
        if req.kind == "program":
            if shutil.which(req.name, path=path) is None:
                problems.append(f"`{req.name}` not found on PATH: {req.why}")
        elif req.kind == "module":
            try:
                found = importlib.util.find_spec(req.name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                problems.append(f"Python module `{req.name}` not installed: {req.why}")
        elif req.kind == "endpoint":
            why = _reachable(req.name, timeout)
            if why:
                problems.append(f"{req.name} is not reachable ({why}): {req.why}")
        else:
            raise ValueError(f"unknown requirement kind {req.kind!r}")
    return problems


HOROVOD_REBUILD = ("rebuild it: apt-get install libopenmpi-dev openmpi-bin (as root), then "
                   "HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_TENSORFLOW=1 pip install "
                   "--no-build-isolation --no-cache-dir --force-reinstall horovod==0.28.1 "
                   "(bash scripts/setup_env.sh does both)")
_HOROVOD_BUILD_PROBE = ("import horovod.tensorflow as hvd; "
                        "print('HCCR_HOROVOD_BUILD', int(hvd.mpi_built()), int(hvd.gloo_built()))")


@cache
def horovod_build() -> dict[str, bool] | None:
    """{"mpi": ..., "gloo": ...} for the Horovod this Python imports, or None when it has
    none (or it does not load). Asked in a fresh process (importing TensorFlow takes seconds;
    nothing is initialised)."""
    try:
        if importlib.util.find_spec("horovod") is None:
            return None
    except (ImportError, ValueError):
        return None
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        result = subprocess.run([sys.executable, "-c", _HOROVOD_BUILD_PROBE], env=env,
                                capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return None
    for line in result.stdout.splitlines():
        if line.startswith("HCCR_HOROVOD_BUILD "):
            _, mpi, gloo = line.split()
            return {"mpi": mpi == "1", "gloo": gloo == "1"}
    return None


def check_horovod_mode(mpi: bool, build: dict[str, bool] | None) -> None:
    """Raises LaunchError when the installed Horovod (`build`, from horovod_build) cannot run
    the requested mode; nothing to check when there is no Horovod here (a script rendered for
    another machine's environment)."""
    if build is None:
        return
    if mpi and not build["mpi"]:
        raise LaunchError(f"--mpi needs Horovod built with MPI, and the Horovod of "
                          f"{sys.prefix} is not (`horovodrun --check-build`): "
                          f"{HOROVOD_REBUILD}; or use --gloo")
    if not mpi and not build["gloo"]:
        raise LaunchError(f"--gloo needs Horovod built with Gloo, and the Horovod of "
                          f"{sys.prefix} is not (`horovodrun --check-build`): "
                          f"{HOROVOD_REBUILD.replace('WITH_MPI=1 ', '')}; or use --mpi")


# What to do when the scheduler refuses a submission, by launcher.
_REJECTED = {
    "slurm": ("sbatch rejected the job", "fix the option it names (the script's #SBATCH lines, "
              "e.g. --partition: `sinfo` lists the partitions; --account, --time, --gres)"),
    "k8s": ("kubectl apply rejected the manifest", "fix what it names (the namespace, the "
            "operator's CRD: is the Kubeflow training operator installed?)"),
}


def write(plan: Plan, path: str) -> str:
    """Writes the plan's file (executable for scripts) and returns its path."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(plan.text)
    if plan.text.startswith("#!"):
        os.chmod(path, 0o755)
    return path


def execute(plan: Plan, out: str | None = None, log=sys.stderr) -> int:
    """Checks the plan's requirements, writes its file (to `out`, or a temporary file) and
    runs its submit command; returns that command's exit status.

    Raises:
      LaunchError: a requirement is missing (the message names each one).
    """
    problems = missing(plan.requires)
    if problems:
        raise LaunchError(f"cannot run the {plan.launcher} job: " + "; ".join(problems))
    env = dict(os.environ, PATH=search_path())
    with tempfile.TemporaryDirectory(prefix="hccr-launch-") as tmp:
        path = write(plan, out or os.path.join(tmp, plan.filename))
        if out:
            print(f"hccr-launch: wrote {path}", file=log)
        argv = plan.submit_argv(path)
        print(f"hccr-launch: {plan.launcher}: $ {shlex.join(argv)}", file=log, flush=True)
        if plan.launcher not in _REJECTED:
            return subprocess.run(argv, env=env, check=False).returncode
        result = subprocess.run(argv, env=env, check=False, stderr=subprocess.PIPE, text=True)
        if result.returncode == 0:
            log.write(result.stderr)
            return 0
        what, fix = _REJECTED[plan.launcher]
        reason = [line for line in result.stderr.splitlines() if line.strip()]
        reason = reason[-1].strip() if reason else f"exit status {result.returncode}"
        for prefix in ("sbatch: error: ", "error: "):
            reason = reason.removeprefix(prefix)
        kept = f"the script is kept at {path}" if out else "keep the script with --out FILE"
        raise LaunchError(f"{what}: {reason}; {fix}; {kept}")
