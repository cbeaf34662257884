"""The NCCL settings every GPU launcher sets: as environment variables (Kubernetes manifests) or
as a commented section of a bash script (horovodrun, MultiWorker, SLURM).
"""
from __future__ import annotations

import shlex

from launch.plan import section


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
