"""`hccr-launch`: render and run training and preprocessing jobs, one launcher for every config.

    hccr-launch local --np 2 --config smoke --data data/chars --workdir runs/smoke
    hccr-launch horovod --hosts gpu1:4,gpu2:4 --gpus-per-node 4 --config hwdb11 ...
    hccr-launch multiworker --hosts gpu1,gpu2 --config hwdb11 ...
    hccr-launch slurm --nodes 2 --gpus-per-node 4 --config hwdb11 ... --out hwdb11.sbatch
    hccr-launch k8s --strategy horovod --nodes 2 --gpus-per-node 4 --image IMG --config ...
    hccr-launch beam dataflow --input 'gs://b/HWDB1.1trn_gnt/*.gnt' --output gs://b/hwdb11 ...

`--dry-run` prints exactly what would run or be submitted (the script or manifest, then the
command that runs it); `--out FILE` keeps it. A command after `--` replaces hccr-train (for
the beam launcher: extra hccr-preprocess/Beam flags).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from beam_preprocess import cli_errors
from beam_preprocess.contract import schema
from launch import beam, horovod, hosts, k8s, multiworker, slurm, submit, train_job
from launch.errors import LaunchError
from launch.plan import check_printable
from launch.train_job import TrainJob
from trainers.training import configs

PROG = "hccr-launch"


def default_setup() -> list[str]:
    """Activate the Python environment hccr-launch runs from, when it is a virtualenv."""
    if sys.prefix != sys.base_prefix:
        return [f"source {shlex.quote(os.path.join(sys.prefix, 'bin', 'activate'))}"]
    return []


# === Flags ===


def _output_flags(p: argparse.ArgumentParser, setup: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--dry-run", action="store_true",
                   help="print the script/manifest and the command that would run it; "
                        "run nothing")
    g.add_argument("--out", metavar="FILE",
                   help="write the script/manifest here, to keep and edit (it is still run "
                        "unless --dry-run)")
    if setup:
        g.add_argument("--setup", action="append", metavar="LINE",
                       help="shell line(s) that set up the environment in the script, e.g. "
                            "'module load cuda' (repeatable; default: activate this "
                            "virtualenv; '' for none)")


def _train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (passed to hccr-train)")
    g.add_argument("--config", help="a trainers.training.configs preset (smoke, demo, hwdb11, "
                                    "...) or a config.json")
    g.add_argument("--data", help="preprocessed data directory (local, gs://, s3://, ...)")
    g.add_argument("--workdir", help="checkpoints, logs and the model")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   dest="overrides", help="config override (repeatable)")
    g.add_argument("--precision", choices=configs.PRECISIONS)


def _mode_flags(p: argparse.ArgumentParser, default_mpi: bool) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gloo", dest="mpi", action="store_false",
                   help="Horovod over Gloo (TCP)" + ("" if default_mpi else " (default)"))
    g.add_argument("--mpi", dest="mpi", action="store_true",
                   help="Horovod over MPI" + (" (default)" if default_mpi else ""))
    p.set_defaults(mpi=default_mpi)


def _gpu_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus-per-node", type=int, default=0, metavar="N",
                   help="GPUs per machine (0: CPU); > 0 adds the NCCL settings")
    p.add_argument("--network-interface", metavar="IFACE",
                   help="interface between nodes (NCCL_SOCKET_IFNAME, horovodrun's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render and run hccr jobs: Horovod on this machine or several, "
                    "MultiWorkerMirroredStrategy, SLURM, Kubernetes (Kubeflow MPIJob/TFJob), "
                    "and the Beam preprocessing job on Dataflow, Flink, Spark or Dask.",
        epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="launcher", required=True, metavar="LAUNCHER")
    for add_launcher in (_local_parser, _horovod_parser, _multiworker_parser, _slurm_parser,
                         _k8s_parser, _beam_parser):
        add_launcher(sub)
    return parser


def _local_parser(sub) -> None:
    p = sub.add_parser("local", help="horovodrun -np N -H localhost:N on this machine")
    p.add_argument("--np", type=int, default=2, help="processes (ranks) (default 2)")
    _mode_flags(p, default_mpi=False)
    _gpu_flags(p)
    _train_flags(p)
    _output_flags(p)


def _horovod_parser(sub) -> None:
    p = sub.add_parser("horovod", help="horovodrun over several machines (ssh)")
    placement = p.add_mutually_exclusive_group(required=True)
    placement.add_argument("--hosts", metavar="H1:SLOTS,...",
                           help="hosts and their slots, as horovodrun -H (slots default: "
                                "--gpus-per-node, or 1)")
    placement.add_argument("--hostfile", metavar="FILE", help="`host slots=N` per line")
    p.add_argument("--np", type=int, help="processes (default: every slot)")
    _mode_flags(p, default_mpi=False)
    _gpu_flags(p)
    _train_flags(p)
    _output_flags(p)


def _multiworker_parser(sub) -> None:
    p = sub.add_parser("multiworker", help="MultiWorkerMirroredStrategy, TF_CONFIG per worker")
    p.add_argument("--hosts", metavar="H1,H2,...",
                   help="one worker per host (remote ones over ssh); default: --np on this "
                        "machine")
    p.add_argument("--np", type=int, default=2, help="workers on this machine without --hosts")
    p.add_argument("--port", type=int, default=multiworker.DEFAULT_PORT,
                   help=f"worker port ({multiworker.DEFAULT_PORT}; +1 per extra worker on a "
                        "host)")
    _gpu_flags(p)
    _train_flags(p)
    _output_flags(p)


def _slurm_parser(sub) -> None:
    p = sub.add_parser("slurm", help="an sbatch script with srun")
    p.add_argument("--strategy", choices=slurm.STRATEGIES, default="horovod")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tasks-per-node", type=int,
                   help="horovod ranks per node (default: --gpus-per-node, or 1)")
    p.add_argument("--cpus-per-task", type=int)
    p.add_argument("--time", default="24:00:00", help="wall-clock limit (24:00:00)")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--job-name")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="an extra #SBATCH option, e.g. --sbatch=--qos=high (repeatable)")
    p.add_argument("--srun-mpi", default="pmix", help="srun --mpi= plugin for --mpi (pmix)")
    p.add_argument("--signal-seconds", type=int, default=slurm.DEFAULT_SIGNAL_SECONDS,
                   metavar="S",
                   help="SLURM sends USR1 this long before --time; the trainer checkpoints "
                        "and the job requeues itself (default %(default)s; 0: neither)")
    p.add_argument("--port", type=int, default=multiworker.DEFAULT_PORT,
                   help="multi_worker: the workers' port")
    _mode_flags(p, default_mpi=True)
    _gpu_flags(p)
    _train_flags(p)
    _output_flags(p)


def _k8s_parser(sub) -> None:
    p = sub.add_parser("k8s", help="a Kubeflow MPIJob (horovod) or TFJob (multi_worker)")
    p.add_argument("--strategy", choices=k8s.STRATEGIES, default="horovod")
    p.add_argument("--image", required=True,
                   help="container image with hccr installed (and MPI + sshd for an MPIJob): "
                        "launch/docker/Dockerfile builds one")
    p.add_argument("--nodes", type=int, default=1, help="worker pods")
    p.add_argument("--slots-per-worker", type=int,
                   help="MPIJob ranks per pod (default: --gpus-per-node, or 1)")
    p.add_argument("--namespace", default="default")
    p.add_argument("--name", help="the job's name (default: hccr-CONFIG)")
    p.add_argument("--pvc", action="append", default=[], metavar="CLAIM:/PATH",
                   help="mount a PersistentVolumeClaim in the worker pods (repeatable)")
    _mode_flags(p, default_mpi=True)
    _gpu_flags(p)
    _train_flags(p)
    _output_flags(p, setup=False)


def _beam_parser(sub) -> None:
    p = sub.add_parser("beam", help="the preprocessing job on Dataflow, Flink, Spark, Dask or "
                                    "local")
    p.add_argument("runner", choices=beam.RUNNERS)
    p.add_argument("--input", action="append", default=[], metavar="GLOB", required=True,
                   help="input files (repeatable), as hccr-preprocess --input")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--task", choices=schema.TASKS)
    p.add_argument("--job-name")
    g = p.add_argument_group("dataflow")
    g.add_argument("--project")
    g.add_argument("--region")
    g.add_argument("--temp-location", metavar="GS_URL")
    g.add_argument("--num-workers", type=int,
                   help="Dataflow's initial workers; direct: local worker processes; dask: "
                        "--nworkers of the rendered `dask worker` command")
    g.add_argument("--max-num-workers", type=int)
    g.add_argument("--machine-type")
    g.add_argument("--setup-file", help="default: this repository's setup.py")
    g = p.add_argument_group("flink / spark")
    g.add_argument("--flink-master", metavar="HOST:PORT", help="default localhost:8081")
    g.add_argument("--spark-master", metavar="spark://HOST:PORT",
                   help="default spark://localhost:7077")
    g.add_argument("--environment-type", choices=beam.ENVIRONMENTS,
                   help="where the Python workers run (default: DOCKER with --image, "
                        "EXTERNAL with --worker-pool, else LOOPBACK)")
    g.add_argument("--worker-pool", metavar="HOST:PORT", help="EXTERNAL worker pool address")
    g.add_argument("--parallelism", type=int)
    g = p.add_argument_group("dask")
    g.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                   help=f"the Dask scheduler (default tcp://localhost:{beam.DEFAULT_DASK_PORT})")
    p.add_argument("--image", help="SDK container with hccr installed (Dataflow: "
                                   "--sdk_container_image; Flink/Spark: DOCKER environment); "
                                   "launch/docker/Dockerfile builds one")
    _output_flags(p)


# === Main ===


def _job(args, command) -> TrainJob:
    job = TrainJob(config=args.config, data=args.data, workdir=args.workdir,
                   overrides=tuple(args.overrides), precision=args.precision,
                   command=tuple(command))
    train_job.check(job)
    return job


def _beam_spec(args, command) -> beam.BeamJobSpec:
    return beam.BeamJobSpec(
        runner=args.runner, inputs=tuple(args.input), output=args.output, task=args.task,
        extra=tuple(command), job_name=args.job_name, image=args.image,
        num_workers=args.num_workers, project=args.project, region=args.region,
        temp_location=args.temp_location, max_num_workers=args.max_num_workers,
        machine_type=args.machine_type, setup_file=args.setup_file,
        flink_master=args.flink_master, spark_master=args.spark_master,
        environment_type=args.environment_type, worker_pool=args.worker_pool,
        parallelism=args.parallelism, dask_address=args.dask_address)


def _slurm_spec(args) -> slurm.SlurmJobSpec:
    return slurm.SlurmJobSpec(
        strategy=args.strategy, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        tasks_per_node=args.tasks_per_node, cpus_per_task=args.cpus_per_task, time=args.time,
        partition=args.partition, account=args.account, job_name=args.job_name, mpi=args.mpi,
        srun_mpi=args.srun_mpi, port=args.port, network_interface=args.network_interface,
        extra_sbatch=tuple(args.sbatch), signal_seconds=args.signal_seconds)


def plan_from_args(args, command, origin: str):
    """The Plan the parsed flags ask for."""
    setup = getattr(args, "setup", None)
    setup = default_setup() if setup is None else setup
    if args.launcher == "beam":
        return beam.beam_plan(_beam_spec(args, command), setup, origin)
    job = _job(args, command)
    uses_horovod = args.launcher in ("local", "horovod") or (
        args.launcher == "slurm" and args.strategy == "horovod")
    if uses_horovod and getattr(args, "setup", None) is None:
        # The script activates this environment, so its Horovod must run the mode asked for.
        # With --setup the script brings its own environment, which cannot be checked here.
        submit.check_horovod_mode(args.mpi, submit.horovod_build())
    common = {"network_interface": args.network_interface, "origin": origin}
    if args.launcher == "local":
        return horovod.local_plan(job, args.np, args.mpi, args.gpus_per_node, setup=setup,
                                  **common)
    if args.launcher == "horovod":
        listed = (hosts.parse_hosts(args.hosts, max(args.gpus_per_node, 1))
                  if args.hosts else None)
        return horovod.horovod_plan(job, listed, args.hostfile, args.np, args.mpi,
                                    args.gpus_per_node, setup=setup, **common)
    if args.launcher == "multiworker":
        workers = ([h.strip() for h in args.hosts.split(",") if h.strip()] if args.hosts
                   else None)
        return multiworker.multiworker_plan(job, workers, args.np, args.port,
                                            args.gpus_per_node, setup=setup, **common)
    if args.launcher == "slurm":
        return slurm.slurm_plan(job, _slurm_spec(args), setup, origin)
    return k8s.k8s_plan(job, args.image, args.strategy, args.nodes, args.gpus_per_node,
                        args.slots_per_worker, args.namespace, args.name, args.mpi, pvcs=args.pvc,
                        **common)


@cli_errors.entry_point("hccr-launch")
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    args = build_parser().parse_args(argv)
    kept = [word for word in argv if word != "--dry-run"]
    origin = shlex.join([PROG] + kept + (["--"] + command if command else []))
    try:
        for word in argv + command:  # every value may end up in a script or manifest
            check_printable(word, "argument")
        plan = plan_from_args(args, command, origin)
        if args.dry_run:
            if args.out:
                submit.write(plan, args.out)
                print(f"{PROG}: wrote {args.out}", file=sys.stderr)
            sys.stdout.write(plan.dry_run_text(args.out))
            return 0
        return submit.execute(plan, args.out)
    except LaunchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
