"""Renders MultiWorkerMirroredStrategy jobs started from this machine: one worker per host (or
several on this machine), each with its own TF_CONFIG; remote workers start over ssh.

The function runs nothing: it returns a `Plan` whose text is a commented bash script, run by
`bash FILE` (see submit.py). The workers' base port, DEFAULT_PORT, is the SLURM launcher's too.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
from collections.abc import Sequence

from launch.errors import LaunchError
from launch.hosts import LOCALHOSTS
from launch.nccl import nccl_lines
from launch.plan import (
    FILE,
    Plan,
    Raw,
    Requirement,
    file_stem,
    format_command,
    header,
    script,
    section,
    setup_lines,
)
from launch.train_job import TrainJob, train_comment

DEFAULT_PORT = 12345


# === TF_CONFIG ===


def worker_addresses(hosts: Sequence[str], port: int = DEFAULT_PORT) -> list[str]:
    """One `host:port` per worker; workers sharing a host get consecutive ports."""
    seen: dict[str, int] = {}
    addresses = []
    for host in hosts:
        addresses.append(f"{host}:{port + seen.get(host, 0)}")
        seen[host] = seen.get(host, 0) + 1
    return addresses


def tf_config(workers: Sequence[str], index: int) -> str:
    """The TF_CONFIG of worker `index`: the same cluster everywhere, its own task index.

    Worker 0 is the chief of MultiWorkerMirroredStrategy (it writes checkpoints and logs).
    """
    if not 0 <= index < len(workers):
        raise ValueError(f"index must be in [0, {len(workers)}). Received: {index}")
    return json.dumps({"cluster": {"worker": list(workers)},
                       "task": {"type": "worker", "index": index}})


# === The job ===


def multiworker_plan(job: TrainJob, hosts: Sequence[str] | None = None, np: int = 2,
                     port: int = DEFAULT_PORT, gpus: int = 0,
                     network_interface: str | None = None, setup: Sequence[str] = (),
                     origin: str | None = None, this_host: str | None = None,
                     cwd: str | None = None) -> Plan:
    """MultiWorkerMirroredStrategy: one worker per host (or `np` on this machine), each
    started with its own TF_CONFIG; remote workers over ssh.

    Where remote hosts take part, the workers on this machine are addressed by `this_host`
    (default: its host name), since "localhost" would mean each remote worker itself; remote
    workers start in `cwd` (default: the current directory), so relative paths still hold.
    """
    hosts = list(hosts) if hosts else ["localhost"] * np
    if not hosts or any(":" in h for h in hosts):
        raise LaunchError("multiworker --hosts takes host names (one worker each; --port sets "
                          f"the port); Received: {','.join(hosts)}")
    if any(h not in LOCALHOSTS for h in hosts):
        this_host = this_host or socket.gethostname()
        addresses = worker_addresses([this_host if h in LOCALHOSTS else h for h in hosts], port)
    else:
        addresses = worker_addresses(hosts, port)
    argv = job.argv("multi_worker")
    cwd = cwd or os.getcwd()
    lines = header(f"hccr-launch multiworker: MultiWorkerMirroredStrategy training of "
                   f"{job.what} with {len(hosts)} workers: {', '.join(addresses)}.", origin,
                   "Run it with `bash FILE`; remote workers start over ssh and need the same "
                   "Python environment and paths (a shared filesystem). Keep it and edit it.")
    lines += ["set -euo pipefail"]
    lines += setup_lines(setup, "hccr-train and TensorFlow must be on PATH here (and on every "
                                "host).")
    lines += nccl_lines(gpus, network_interface, horovod=False)
    lines += section(
        "Workers",
        "Every worker gets the same cluster (all worker addresses) and its own task index in "
        "TF_CONFIG; TensorFlow listens on the worker's own address. Worker 0 is the chief.")
    lines += train_comment(job, "multi_worker", len(hosts) * max(gpus, 1))
    lines.append("pids=()")
    setup_cmd = " && ".join(line for line in setup if line)
    for index, (host, address) in enumerate(zip(hosts, addresses, strict=True)):
        config = tf_config(addresses, index)
        if host in LOCALHOSTS:
            lines.append(f"# worker {index}: {address} (this machine)")
            lines.append(format_command([Raw(f"TF_CONFIG={shlex.quote(config)}")], argv)
                         + " &")
        else:
            remote = " && ".join(part for part in (
                f"cd {shlex.quote(cwd)}", setup_cmd,
                f"TF_CONFIG={shlex.quote(config)} exec {shlex.join(argv)}") if part)
            lines.append(f"# worker {index}: {address} (over ssh; the same paths there)")
            lines.append(format_command(["ssh", "-o", "BatchMode=yes", host], [remote]) + " &")
        lines.append("pids+=($!)")
    lines += section("Wait",
                     "A worker that fails leaves the others waiting in a collective forever: "
                     "stop them all.")
    lines += ["trap 'kill \"${pids[@]}\" 2>/dev/null || true' INT TERM",
              'for _ in "${pids[@]}"; do',
              "  if ! wait -n; then",
              '    echo "hccr-launch: a worker failed; stopping the others" >&2',
              '    kill "${pids[@]}" 2>/dev/null || true',
              "    exit 1",
              "  fi",
              "done"]
    requires = []
    if any(h in LOCALHOSTS for h in hosts):
        requires.append(Requirement("program", argv[0], "the training command of the workers"))
    if any(h not in LOCALHOSTS for h in hosts):
        requires.append(Requirement("program", "ssh", "remote workers start over ssh"))
    return Plan("multiworker", script(lines),
                file_stem("hccr", job.name, "multiworker") + ".sh", ("bash", FILE),
                tuple(requires))
