"""Renders a SLURM batch script: `#SBATCH` resources, then `srun` (or horovodrun) starting
the training on every allocated node, the distribution derived from SLURM's environment.

- Horovod over MPI: `srun --mpi=pmix` starts one task per GPU; PMIx gives every task its rank
  and the world size (SLURM_PROCID, SLURM_NTASKS), which Horovod's MPI controller reads.
- Horovod over Gloo: a hostfile is written from SLURM_JOB_NODELIST (`scontrol show
  hostnames`) and horovodrun, on the first node, starts every rank over ssh.
- MultiWorkerMirroredStrategy: one task per node; each builds its TF_CONFIG from the node
  list and its SLURM_PROCID, task i listening on base port + i (tasks that share a host, as
  emulated nodes on one machine do, never collide).

Preemption: the job asks SLURM for USR1 before its time limit (`--signal=B:USR1@N`) and is
requeueable (`--requeue`). The batch shell traps USR1 and hands it to the training processes
(srun forwards it to every task; under horovodrun the shell signals the ranks itself); the
trainer checkpoints at its next step boundary and exits with `PREEMPTED_EXIT` (75), and the
script then requeues the job, which resumes from that checkpoint. A requeue or preemption by
SLURM sends SIGTERM to every process: the trainer does the same within SLURM's KillWait.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from launch.errors import LaunchError
from launch.multiworker import DEFAULT_PORT
from launch.nccl import nccl_lines
from launch.plan import (
    FILE,
    Plan,
    Raw,
    Requirement,
    check_printable,
    comments,
    file_stem,
    format_command,
    header,
    script,
    section,
    setup_lines,
)
from launch.train_job import TrainJob, train_comment
from trainers.training.stop_signals import PREEMPTED_EXIT  # no TensorFlow: rendering needs none

STRATEGIES = ("horovod", "multi_worker")
DEFAULT_SIGNAL_SECONDS = 300

# The per-task wrapper srun starts: `bash -c BODY hccr-task COMMAND...` runs BODY with the
# training command as "$@", so the command needs no second level of quoting.
_HOROVOD_TASK = """'
echo "hccr: rank $SLURM_PROCID of $SLURM_NTASKS (local rank $SLURM_LOCALID) on $(hostname)"
exec "$@"' hccr-task"""
_WORKER_TASK = """'
export TF_CONFIG="{\\"cluster\\": {\\"worker\\": [$HCCR_WORKERS]}, \
\\"task\\": {\\"type\\": \\"worker\\", \\"index\\": $SLURM_PROCID}}"
echo "hccr: worker $SLURM_PROCID of $SLURM_NTASKS on $(hostname): TF_CONFIG=$TF_CONFIG"
exec "$@"' hccr-task"""


def _sbatch(option: str, value, comment: str) -> list[str]:
    if value is None:
        return [f"# {comment}", f"#SBATCH --{option}"]
    return [f"# {comment}", f"#SBATCH --{option}={check_printable(value, '--' + option)}"]


# Runs the launch command in the background so that the shell can take USR1, passes USR1 on
# with forward_usr1, and requeues the job when the trainer exits with PREEMPTED_EXIT.
_PREEMPTIBLE = """\
{forward}
stopping=0
trap 'stopping=1; forward_usr1' USR1
{command} &
step=$!
status=0
wait "$step" || status=$?
# A trapped signal ends `wait` early (status > 128): wait again for the step itself.
while [ "$status" -gt 128 ] && kill -0 "$step" 2>/dev/null; do
  status=0
  wait "$step" || status=$?
done
# The trainer exits {code} after its checkpoint (srun passes that on; horovodrun reports 1).
if [ "$status" -eq {code} ] || {{ [ "$stopping" = 1 ] && [ "$status" -ne 0 ]; }}; then
  echo "hccr: stopped with a checkpoint after USR1; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
"""
_FORWARD_SRUN = """\
# srun forwards USR1 to every task (each task execs the trainer).
forward_usr1() {{
  echo "hccr: USR1 (time limit near): the trainer checkpoints at its next step"
  kill -USR1 "$step" 2>/dev/null || true
}}"""
_FORWARD_RANKS = """\
# horovodrun does not forward USR1: signal the ranks on this node (the processes under it
# with HOROVOD_RANK set); the trainers agree over Horovod on the step to stop at.
forward_usr1() {{
  echo "hccr: USR1 (time limit near): the trainer checkpoints at its next step"
  local pids=("$step") i=0 child
  while [ "$i" -lt "${{#pids[@]}}" ]; do
    for child in $(pgrep -P "${{pids[$i]}}"); do pids+=("$child"); done
    i=$((i + 1))
  done
  for child in "${{pids[@]:1}}"; do
    if tr '\\0' '\\n' < "/proc/$child/environ" 2>/dev/null | grep -q '^HOROVOD_RANK='; then
      kill -USR1 "$child" 2>/dev/null || true
    fi
  done
}}"""


@dataclasses.dataclass(frozen=True)
class SlurmJobSpec:
    """How the training job runs on SLURM: the allocation, the distribution, the launch.

    Attributes:
      strategy: one of STRATEGIES: "horovod" (one rank per task) or "multi_worker" (one
        MultiWorkerMirroredStrategy worker per node, driving all of its GPUs).
      nodes: machines to allocate (>= 1).
      gpus_per_node: GPUs per machine (0: CPU); > 0 adds `--gres` and the NCCL settings.
      tasks_per_node: horovod: ranks per node (default: gpus_per_node, or 1); multi_worker
        takes only 1.
      cpus_per_task: CPU cores per task, for the input pipeline's threads (default: SLURM's).
      time: the wall-clock limit, HH:MM:SS or D-HH:MM:SS.
      partition: the partition (queue) (default: SLURM's).
      account: the account charged (default: SLURM's).
      job_name: the job's name in squeue (default: hccr-CONFIG).
      mpi: horovod: ranks talk over MPI and `srun --mpi=SRUN_MPI` starts them (True), or over
        Gloo and horovodrun starts them over ssh (False).
      srun_mpi: the srun --mpi plugin that hands the ranks their place (pmix, pmi2, ...).
      port: multi_worker: worker i listens on its node at port + i.
      network_interface: the interface between nodes (NCCL_SOCKET_IFNAME, horovodrun's).
      extra_sbatch: more #SBATCH options, as written after `#SBATCH ` (e.g. "--qos=high").
      signal_seconds: SLURM sends USR1 this long before the time limit; the trainer then
        checkpoints and the job requeues itself (0: no signal, no requeue).
    """
    strategy: str = "horovod"
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    time: str = "24:00:00"
    partition: str | None = None
    account: str | None = None
    job_name: str | None = None
    mpi: bool = True
    srun_mpi: str = "pmix"
    port: int = DEFAULT_PORT
    network_interface: str | None = None
    extra_sbatch: Sequence[str] = ()
    signal_seconds: int = DEFAULT_SIGNAL_SECONDS

    @property
    def horovod(self) -> bool:
        return self.strategy == "horovod"


def slurm_plan(job: TrainJob, spec: SlurmJobSpec = SlurmJobSpec(), setup: Sequence[str] = (),
               origin: str | None = None) -> Plan:
    """The sbatch script of a Horovod or MultiWorkerMirrored job on `spec.nodes` nodes.

    `setup`: shell lines that set up the environment on every node; `origin`: the command line
    that asked for the script, written into it.
    """
    tasks_per_node = _tasks_per_node(spec)
    lines = _header(job, spec, tasks_per_node, origin)
    lines += _resources(job, spec, tasks_per_node)
    lines += _environment(spec, setup)
    argv = job.argv(spec.strategy)
    if spec.horovod and spec.mpi:
        lines += _horovod_srun(job, spec, argv, spec.nodes * tasks_per_node)
    elif spec.horovod:
        lines += _horovod_gloo(job, spec, argv, spec.nodes * tasks_per_node)
    else:
        lines += _multiworker(job, spec, argv)
    requires = (Requirement("program", "sbatch",
                            "SLURM's sbatch submits the script: run this on a SLURM login "
                            "node, or keep the script (--dry-run --out FILE) and submit it "
                            "there"),)
    return Plan("slurm", script(lines), file_stem("hccr", job.name, spec.strategy) + ".sbatch",
                ("sbatch", FILE), requires)


def _tasks_per_node(spec: SlurmJobSpec) -> int:
    """The tasks SLURM starts on each node, once the spec is checked.

    Raises:
      LaunchError: an unknown strategy, too few nodes or GPUs, or several multi_worker tasks.
    """
    if spec.strategy not in STRATEGIES:
        raise LaunchError(f"slurm --strategy must be one of {', '.join(STRATEGIES)}; "
                          f"Received: {spec.strategy!r}")
    if spec.nodes < 1 or spec.gpus_per_node < 0:
        raise LaunchError(f"need --nodes >= 1 and --gpus-per-node >= 0; Received: {spec.nodes}, "
                          f"{spec.gpus_per_node}")
    if spec.horovod:
        return spec.tasks_per_node or max(spec.gpus_per_node, 1)
    if spec.tasks_per_node not in (None, 1):
        raise LaunchError("multi_worker runs one worker per node (it drives all of the node's "
                          f"GPUs); Received: --tasks-per-node {spec.tasks_per_node}")
    return 1


# === The script's parts, in order ===


def _header(job: TrainJob, spec: SlurmJobSpec, tasks_per_node: int,
            origin: str | None) -> list[str]:
    """What the script runs, where it came from and how to submit it."""
    if spec.horovod:
        kind = f"Horovod training ({'MPI, srun' if spec.mpi else 'Gloo, horovodrun'})"
    else:
        kind = "MultiWorkerMirroredStrategy training"
    gpus = f" x {spec.gpus_per_node} GPU(s)" if spec.gpus_per_node else ""
    return header(
        f"hccr-launch slurm: {kind} of {job.what} on {spec.nodes} node(s){gpus}, "
        f"{spec.nodes * tasks_per_node} task(s).",
        origin,
        "Submit it with `sbatch FILE` from the directory relative paths start from; keep it "
        "and edit it.\nsbatch reads the #SBATCH lines (up to the first command); srun then "
        "starts the tasks.", shebang="#!/bin/bash")


def _resources(job: TrainJob, spec: SlurmJobSpec, tasks_per_node: int) -> list[str]:
    """The #SBATCH lines, each under a comment on what it asks for."""
    if spec.horovod:
        per_task = "one Horovod rank per GPU" if spec.gpus_per_node else "Horovod ranks"
    else:
        per_task = "one worker per node"
    lines = ["#"]
    lines += _sbatch("job-name", spec.job_name or file_stem("hccr", job.name),
                     "The job's name in squeue.")
    lines += _sbatch("nodes", spec.nodes, "Machines.")
    lines += _sbatch("ntasks-per-node", tasks_per_node, f"Tasks per machine: {per_task}.")
    if spec.gpus_per_node:
        lines += _sbatch("gres", f"gpu:{spec.gpus_per_node}", "GPUs per machine.")
    if spec.cpus_per_task:
        lines += _sbatch("cpus-per-task", spec.cpus_per_task,
                         "CPU cores per task (the input pipeline's threads).")
    lines += _sbatch("time", spec.time, "Wall-clock limit (HH:MM:SS or D-HH:MM:SS).")
    lines += _sbatch("output", "%x-%j.out", "Log file: %x is the job name, %j the job id.")
    if spec.signal_seconds:
        lines += _sbatch("signal", f"B:USR1@{spec.signal_seconds}",
                         f"USR1 to this script {spec.signal_seconds} s before the time limit: "
                         "the trainer checkpoints and the job requeues.")
        lines += _sbatch("requeue", None, "Requeueable: after USR1, a preemption or a node "
                                          "failure it restarts and resumes.")
        lines += _sbatch("open-mode", "append", "A restarted job appends to the same log.")
    if spec.partition:
        lines += _sbatch("partition", spec.partition, "The partition (queue).")
    if spec.account:
        lines += _sbatch("account", spec.account, "The account charged.")
    for extra in spec.extra_sbatch:
        lines += ["# Given with --sbatch.", f"#SBATCH {check_printable(extra, '--sbatch')}"]
    return lines


def _environment(spec: SlurmJobSpec, setup: Sequence[str]) -> list[str]:
    """The shell's settings, the user's set-up, NCCL, and the allocated hosts as HOSTS."""
    lines = ["", "set -euo pipefail"]
    lines += setup_lines(setup)
    lines += nccl_lines(spec.gpus_per_node, spec.network_interface, horovod=spec.horovod)
    lines += section("Cluster layout from SLURM",
                     "SLURM_JOB_NODELIST is compressed (gpu[01-04]); scontrol expands it, one "
                     "host per line, in the order SLURM numbers the nodes and tasks.")
    lines += ['mapfile -t HOSTS < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
              'echo "hccr: job $SLURM_JOB_ID: $SLURM_NTASKS task(s) on ${#HOSTS[@]} node(s): '
              '${HOSTS[*]}"']
    return lines


def _horovod_srun(job: TrainJob, spec: SlurmJobSpec, argv: list[str], ranks: int) -> list[str]:
    """Horovod over MPI: srun starts every rank, the MPI plugin gives each its place."""
    lines = section(
        "Launch: one Horovod rank per SLURM task",
        f"srun starts SLURM_NTASKS tasks; --mpi={spec.srun_mpi} hands each its rank and the "
        "world size (SLURM_PROCID, SLURM_NTASKS) through the MPI process interface, "
        "where Horovod's MPI controller reads them. Horovod must be built with MPI "
        "(HOROVOD_WITH_MPI=1); `srun --mpi=list` shows what this cluster supports.\n"
        "Each task logs its place, then runs the training command (\"$@\").")
    lines += train_comment(job, "horovod", ranks)
    lines += _launch(format_command(
        ["srun", f"--mpi={spec.srun_mpi}", "--kill-on-bad-exit=1", "bash", "-c",
         Raw(_HOROVOD_TASK)], argv), _FORWARD_SRUN, spec.signal_seconds)
    return lines


def _horovod_gloo(job: TrainJob, spec: SlurmJobSpec, argv: list[str], ranks: int) -> list[str]:
    """Horovod over Gloo: a hostfile from the allocation, then horovodrun over ssh."""
    lines = section(
        "Hostfile: every allocated node, one slot per task",
        "horovodrun reads `host slots=N` lines.")
    lines += ['HOSTFILE="hccr-hosts-$SLURM_JOB_ID.txt"',
              'for host in "${HOSTS[@]}"; do echo "$host slots=$SLURM_NTASKS_PER_NODE"; '
              'done > "$HOSTFILE"']
    lines += section(
        "Launch: horovodrun on this (the first) node starts every rank over ssh",
        "--gloo: ranks talk over Gloo (TCP), no MPI needed. Needs ssh between the "
        "allocated nodes without a password; where that is not allowed, render with --mpi "
        "(srun) instead.")
    lines += train_comment(job, "horovod", ranks)
    launcher = ["horovodrun", "-np", Raw('"$SLURM_NTASKS"'), "--hostfile",
                Raw('"$HOSTFILE"'), "--gloo"]
    if spec.network_interface:
        launcher += ["--network-interface", spec.network_interface]
    lines += _launch(format_command(launcher, argv), _FORWARD_RANKS, spec.signal_seconds)
    return lines


def _multiworker(job: TrainJob, spec: SlurmJobSpec, argv: list[str]) -> list[str]:
    """MultiWorkerMirroredStrategy: the worker list from HOSTS, then one srun task per node
    that sets its own TF_CONFIG."""
    lines = section(
        "TF_CONFIG: the same worker list on every task, each task its own index",
        f"Worker i (SLURM_PROCID) listens on its node at port {spec.port} + i, so workers "
        "sharing a host never collide; worker 0 (the first node) is the chief.")
    lines += [f"PORT={spec.port}",
              'WORKERS=""',
              "task=0",
              'for host in "${HOSTS[@]}"; do',
              '  WORKERS="${WORKERS:+$WORKERS, }\\"$host:$((PORT + task))\\""',
              "  task=$((task + 1))",
              "done",
              'export HCCR_WORKERS="$WORKERS"']
    lines += section(
        "Launch: one worker per node; it uses all of the node's GPUs",
        "srun starts one task per node; each sets TF_CONFIG with index SLURM_PROCID, logs "
        "it, then runs the training command (\"$@\").")
    lines += train_comment(job, "multi_worker", spec.nodes * max(spec.gpus_per_node, 1))
    lines += _launch(format_command(
        ["srun", "--kill-on-bad-exit=1", "bash", "-c", Raw(_WORKER_TASK)], argv),
        _FORWARD_SRUN, spec.signal_seconds)
    return lines


def _launch(command: str, forward: str, signal_seconds: int) -> list[str]:
    """The launch command, run so that USR1 reaches the trainer and a checkpointed stop
    requeues the job (or run plainly when no signal is asked for)."""
    if not signal_seconds:
        return [command]
    return comments(
        f"Preemption: before the time limit SLURM sends USR1 to this script (--signal); it is "
        f"passed on to the trainer, which saves a checkpoint at its next step and exits with "
        f"{PREEMPTED_EXIT}; the job then requeues itself and resumes from that checkpoint.") \
        + _PREEMPTIBLE.format(forward=forward.format(), command=command,
                              code=PREEMPTED_EXIT).splitlines()
