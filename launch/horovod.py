"""Renders Horovod jobs started from this machine: `horovodrun -np N -H localhost:N` here (the
`local` launcher), or across several machines over ssh (the `horovod` launcher).

The functions run nothing: each returns a `Plan` whose text is a commented bash script, run
by `bash FILE` (see submit.py).
"""
from __future__ import annotations

from collections.abc import Sequence

from launch.errors import LaunchError
from launch.hosts import LOCALHOSTS, Host, read_hostfile, resolve_np
from launch.nccl import nccl_lines
from launch.plan import (
    FILE,
    Plan,
    Requirement,
    file_stem,
    format_command,
    header,
    script,
    section,
    setup_lines,
)
from launch.train_job import TrainJob, train_comment


def _mode_flag(mpi: bool) -> str:
    return "--mpi" if mpi else "--gloo"


def _mode_text(mpi: bool) -> str:
    return ("--mpi: ranks talk over MPI (Horovod built with MPI, `mpirun` on PATH)." if mpi else
            "--gloo: ranks talk over Gloo (TCP); no MPI needed.")


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
    return Plan("local", script(lines), file_stem("hccr", job.name, "local") + ".sh",
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
    return Plan("horovod", script(lines), file_stem("hccr", job.name, "horovod") + ".sh",
                ("bash", FILE), tuple(requires))
