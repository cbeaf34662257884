"""Renders jobs that start from this machine: `horovodrun` on this machine (local) or over ssh
on several (horovod), and MultiWorkerMirroredStrategy workers with one TF_CONFIG each.

The functions run nothing: each returns a `Plan` whose text is a commented bash script, run
by `bash FILE` (see run.py). The pieces shared with the cluster launchers live here too: host
lists, TF_CONFIG, the NCCL settings.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
from collections.abc import Sequence

from launch import jobs
from launch.jobs import LaunchError, TrainJob
from launch.plan import (
    FILE,
    Plan,
    Raw,
    Requirement,
    comments,
    format_command,
    header,
    script,
    section,
    setup_lines,
)

DEFAULT_PORT = 12345
LOCALHOSTS = ("localhost", "127.0.0.1")


# === Hosts ===


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    slots: int = 1

    def __str__(self):
        return f"{self.name}:{self.slots}"


def parse_hosts(text: str, default_slots: int = 1) -> list[Host]:
    """`h1:4,h2:4` (or `h1,h2` with `default_slots` each) -> hosts; as horovodrun's -H."""
    hosts = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, slots = item.partition(":")
        try:
            count = int(slots) if sep else default_slots
        except ValueError:
            raise LaunchError(f"--hosts takes host[:slots],...; Received: {item!r}") from None
        if not name or count < 1:
            raise LaunchError(f"--hosts takes host[:slots] with slots >= 1; Received: {item!r}")
        hosts.append(Host(name, count))
    if not hosts:
        raise LaunchError(f"--hosts lists no host; Received: {text!r}")
    return hosts


def read_hostfile(path: str, default_slots: int = 1) -> list[Host]:
    """A horovodrun/MPI hostfile: `host slots=N` (or `host:N`, or `host`) per line, # comments."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LaunchError(f"cannot read --hostfile {path}: {e.strerror}") from None
    hosts = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        name, slots = words[0], default_slots
        if ":" in name:
            name, _, text = name.partition(":")
            slots = int(text) if text.isdigit() else -1
        for word in words[1:]:
            if word.startswith("slots="):
                slots = int(word[6:]) if word[6:].isdigit() else -1
        if slots < 1:
            raise LaunchError(f"{path}:{number}: expected `host slots=N`; Received: {line!r}")
        hosts.append(Host(name, slots))
    if not hosts:
        raise LaunchError(f"--hostfile {path} lists no host")
    return hosts


def total_slots(hosts: Sequence[Host]) -> int:
    return sum(h.slots for h in hosts)


def resolve_np(np: int | None, hosts: Sequence[Host]) -> int:
    slots = total_slots(hosts)
    np = slots if np is None else np
    if not 1 <= np <= slots:
        raise LaunchError(f"--np {np} does not fit the {slots} slots of "
                          f"{','.join(map(str, hosts))}")
    return np


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


# === GPUs ===


def nccl_env(network_interface: str | None = None) -> dict[str, str]:
    """The NCCL settings every GPU launcher sets."""
    env = {"NCCL_DEBUG": "WARN"}
    if network_interface:
        env["NCCL_SOCKET_IFNAME"] = network_interface
    return env


def nccl_lines(gpus: int, network_interface: str | None, horovod: bool) -> list[str]:
    """The script section that sets NCCL up for GPU all-reduce (nothing for CPU jobs)."""
    if gpus < 1:
        return []
    users = "Horovod" if horovod else "MultiWorkerMirroredStrategy"
    lines = section(
        "GPUs: NCCL",
        f"{users} all-reduces GPU tensors with NCCL ({gpus} GPU(s) per node here).")
    if horovod:
        lines += ["# Horovod uses NCCL only when it was built with HOROVOD_GPU_OPERATIONS=NCCL",
                  "# (check `horovodrun --check-build`); otherwise it falls back to MPI/Gloo."]
    env = nccl_env(network_interface)
    lines += ["# WARN reports problems only; INFO prints the transports chosen (debug hangs).",
              f"export NCCL_DEBUG={env['NCCL_DEBUG']}",
              "# The network interface between nodes (ib0 for InfiniBand, eth0, ...)."]
    if network_interface:
        lines.append(f"export NCCL_SOCKET_IFNAME={shlex.quote(network_interface)}")
    else:
        lines.append("# export NCCL_SOCKET_IFNAME=eth0")
    lines += ["# Uncomment if InfiniBand is absent or misconfigured (NCCL then uses TCP):",
              "# export NCCL_IB_DISABLE=1"]
    return lines


# === Launchers ===


def _mode_flag(mpi: bool) -> str:
    return "--mpi" if mpi else "--gloo"


def _mode_text(mpi: bool) -> str:
    return ("--mpi: ranks talk over MPI (Horovod built with MPI, `mpirun` on PATH)." if mpi else
            "--gloo: ranks talk over Gloo (TCP); no MPI needed.")


def train_comment(job: TrainJob, strategy: str, replicas: int) -> list[str]:
    """Comment lines on what every process runs (and the global batch, where known)."""
    if job.command:
        return ["# Every process runs the command given after `--`."]
    if strategy == "horovod":
        lines = ["# hccr-train --strategy horovod: each rank reads its shard of the data and",
                 "# all-reduces gradients every step; only rank 0 writes checkpoints and logs."]
    else:
        lines = ["# hccr-train --strategy multi_worker: each worker reads its shard of the data;",
                 "# the chief (worker 0) writes checkpoints and logs."]
    note = jobs.batch_note(job, replicas)
    if note:
        lines += comments(f"{note}.")
    return lines


def _horovod_requirements(mpi: bool) -> list[Requirement]:
    requires = [Requirement("program", "horovodrun",
                            "Horovod's launcher (pip install horovod; see scripts/setup_env.sh)")]
    if mpi:
        requires.append(Requirement("program", "mpirun",
                                    "--mpi needs MPI (apt-get install openmpi-bin, and Horovod "
                                    "built with MPI); or use --gloo"))
    return requires


def local_plan(job: TrainJob, np: int = 2, mpi: bool = False, gpus: int = 0,
               network_interface: str | None = None, setup: Sequence[str] = (),
               origin: str | None = None) -> Plan:
    """`horovodrun -np N -H localhost:N` on this machine."""
    if np < 1:
        raise LaunchError(f"--np must be >= 1; Received: {np}")
    argv = job.argv("horovod")
    launcher = ["horovodrun", "-np", str(np), "-H", f"localhost:{np}", _mode_flag(mpi)]
    lines = header(f"hccr-launch local: Horovod training of {job.what} with {np} processes "
                   "on this machine.", origin,
                   "Keep it and edit it; run it with `bash FILE`.")
    lines += ["set -euo pipefail"]
    lines += setup_lines(setup)
    lines += nccl_lines(gpus, network_interface, horovod=True)
    lines += section("Launch",
                     f"horovodrun starts one process (rank) per slot; -H localhost:{np} gives "
                     f"this machine {np} slots.", _mode_text(mpi))
    lines += train_comment(job, "horovod", np)
    lines.append(format_command(launcher, argv, prefix="exec "))
    requires = _horovod_requirements(mpi)
    requires.append(Requirement("program", argv[0], "the training command of every rank"))
    return Plan("local", script(lines), jobs.file_stem("hccr", job.name, "local") + ".sh",
                ("bash", FILE), tuple(requires))


def horovod_plan(job: TrainJob, hosts: Sequence[Host] | None = None,
                 hostfile: str | None = None, np: int | None = None, mpi: bool = False,
                 gpus: int = 0, network_interface: str | None = None,
                 setup: Sequence[str] = (), origin: str | None = None) -> Plan:
    """`horovodrun -np N -H h1:4,h2:4` (or `--hostfile`) across several machines over ssh."""
    if (hosts is None) == (hostfile is None):
        raise LaunchError("give exactly one of --hosts and --hostfile")
    listed = list(hosts) if hosts is not None else read_hostfile(hostfile, max(gpus, 1))
    np = resolve_np(np, listed)
    placement = (["-H", ",".join(map(str, listed))] if hosts is not None
                 else ["--hostfile", hostfile])
    launcher = ["horovodrun", "-np", str(np)] + placement + [_mode_flag(mpi)]
    if network_interface:
        launcher += ["--network-interface", network_interface]
    argv = job.argv("horovod")
    where = ", ".join(f"{h.name} ({h.slots})" for h in listed)
    lines = header(f"hccr-launch horovod: Horovod training of {job.what} with {np} processes "
                   f"on {len(listed)} machine(s): {where}.", origin,
                   "Run it with `bash FILE` on a machine that can ssh without a password to "
                   "every host, with the same Python environment and paths on every host "
                   "(a shared filesystem).\nKeep it and edit it.")
    lines += ["set -euo pipefail"]
    lines += setup_lines(setup)
    lines += nccl_lines(gpus, network_interface, horovod=True)
    lines += section("Launch",
                     "horovodrun starts one rank per slot on every host (ssh), forwarding this "
                     "environment; rank 0 is the first slot of the first host.",
                     _mode_text(mpi))
    if network_interface:
        lines.append(f"# --network-interface {network_interface}: the interface Horovod's "
                     "own traffic uses between hosts.")
    lines += train_comment(job, "horovod", np)
    lines.append(format_command(launcher, argv, prefix="exec "))
    requires = _horovod_requirements(mpi)
    if any(h.name not in LOCALHOSTS for h in listed):
        requires.append(Requirement("program", "ssh", "horovodrun starts remote ranks over "
                                                      "ssh"))
    return Plan("horovod", script(lines), jobs.file_stem("hccr", job.name, "horovod") + ".sh",
                ("bash", FILE), tuple(requires))


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
                jobs.file_stem("hccr", job.name, "multiworker") + ".sh", ("bash", FILE),
                tuple(requires))
