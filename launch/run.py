"""Runs or submits a rendered `Plan`: checks what it needs first, writes its file, then runs
`bash FILE`, `sbatch FILE` or `kubectl apply -f FILE` and returns that command's exit status.
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

from launch.jobs import LaunchError
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
        return subprocess.run(argv, env=env, check=False).returncode
