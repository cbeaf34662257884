"""Renders the preprocessing job (`hccr-preprocess`, an Apache Beam pipeline) for a runner:
Dataflow, Flink, Spark, a Dask cluster, or Beam's local runner.

This machine runs the driver (`hccr-preprocess` itself), which submits the pipeline to the
runner and waits. The Beam pipeline options are `hccr-preprocess`'s own pass-through flags;
anything after `--` is appended unchanged (more hccr-preprocess or Beam flags).
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence

from launch.errors import LaunchError
from launch.plan import (
    FILE,
    Plan,
    Requirement,
    dns_name,
    file_stem,
    format_command,
    header,
    image_build_command,
    script,
    section,
    setup_lines,
)

PROGRAM = "hccr-preprocess"
RUNNERS = ("dataflow", "flink", "spark", "dask", "direct")
ENVIRONMENTS = ("DOCKER", "EXTERNAL", "LOOPBACK", "PROCESS")
DEFAULT_FLINK_PORT, DEFAULT_SPARK_PORT, DEFAULT_DASK_PORT = 8081, 7077, 8786
DASK_JOBQUEUE_URL = "https://jobqueue.dask.org"
DASK_OPERATOR_URL = "https://kubernetes.dask.org"
REPO_SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "setup.py")


@dataclasses.dataclass(frozen=True)
class BeamJobSpec:
    """The preprocessing job and the runner it runs on: what `hccr-launch beam` renders.

    Attributes:
      runner: one of RUNNERS.
      inputs: input file globs, each passed as hccr-preprocess --input.
      output: the output directory, passed as --output.
      task: "chars" or "lines", passed as --task when set.
      extra: words appended to the command unchanged (more hccr-preprocess or Beam flags).
      job_name: Dataflow's name for the job (default: from the task and the output's name).
      image: an SDK container with hccr installed: Dataflow's --sdk_container_image, or the
        DOCKER environment of Flink and Spark.
      num_workers: Dataflow's initial workers; direct: worker processes on this machine; dask:
        the --nworkers of the rendered `dask worker` command.
      project, region, temp_location: Dataflow's Google Cloud project, region and gs:// temp
        directory (all three required on Dataflow).
      max_num_workers: Dataflow's autoscaling limit.
      machine_type: Dataflow's worker machine type.
      setup_file: Dataflow without an image: the setup.py the workers install hccr from
        (default: this repository's, REPO_SETUP).
      flink_master: the Flink JobManager's REST address (default localhost:8081).
      spark_master: the Spark master (default spark://localhost:7077).
      environment_type: Flink and Spark: where the Python workers run, one of ENVIRONMENTS
        (default: DOCKER with an image, EXTERNAL with a worker pool, else LOOPBACK).
      worker_pool: the EXTERNAL environment's worker pool, HOST:PORT.
      parallelism: Flink's and Spark's parallelism.
      dask_address: the Dask scheduler, tcp://HOST:PORT (default tcp://localhost:8786).
    """
    runner: str
    inputs: Sequence[str]
    output: str
    task: str | None = None
    extra: Sequence[str] = ()
    job_name: str | None = None
    image: str | None = None
    num_workers: int | None = None
    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    max_num_workers: int | None = None
    machine_type: str | None = None
    setup_file: str | None = None
    flink_master: str | None = None
    spark_master: str | None = None
    environment_type: str | None = None
    worker_pool: str | None = None
    parallelism: int | None = None
    dask_address: str | None = None


def beam_plan(spec: BeamJobSpec, setup: Sequence[str] = (), origin: str | None = None) -> Plan:
    """The driver command of the Beam job on `spec.runner`, as a commented bash script.

    `setup`: shell lines that set up the environment; `origin`: the command line that asked for
    the script, written into it.
    """
    if spec.runner not in RUNNERS:
        raise LaunchError(f"beam runner must be one of {', '.join(RUNNERS)}; "
                          f"Received: {spec.runner!r}")
    if not spec.inputs or not spec.output:
        raise LaunchError("beam needs --input GLOB (repeatable) and --output DIR")
    runner = _RUNNERS[spec.runner](spec)
    requires = [Requirement("program", PROGRAM, "the preprocessing job's driver (pip install -e "
                                                ". in this repository)")] + runner.requires
    return Plan("beam", script(_script_lines(spec, runner, setup, origin)),
                file_stem("hccr", "preprocess", spec.runner) + ".sh", ("bash", FILE),
                tuple(requires))


def _command(spec: BeamJobSpec) -> list[str]:
    """`hccr-preprocess --input ... --output ... [--task ...]`, before the runner's flags."""
    command = [PROGRAM]
    for pattern in spec.inputs:
        command += ["--input", pattern]
    command += ["--output", spec.output]
    if spec.task:
        command += ["--task", spec.task]
    return command


def _script_lines(spec: BeamJobSpec, runner: _Runner, setup: Sequence[str],
                  origin: str | None) -> list[str]:
    """The script: what it is, the environment, the runner's notes, then the driver command
    (hccr-preprocess's flags, the runner's, and what was given after `--`)."""
    lines = header(f"hccr-launch beam: the preprocessing job (hccr-preprocess) on "
                   f"{runner.title}.", origin,
                   "Run it with `bash FILE`: this machine runs the driver, which submits the "
                   "pipeline and waits.\nKeep it and edit it.")
    lines += ["set -euo pipefail"]
    lines += setup_lines(setup, "hccr-preprocess and apache-beam must be on PATH here.")
    if runner.cluster_notes:
        lines += section("The Dask cluster", *runner.cluster_notes)
    lines += section(f"Run: {runner.title}", *runner.notes)
    if spec.extra:
        lines.append(f"# Passed through after `--`: {shlex.join(spec.extra)}")
    lines.append(format_command(_command(spec), runner.flags, list(spec.extra),
                                prefix="exec "))
    return lines


# === Runners ===


@dataclasses.dataclass
class _Runner:
    """What one runner adds to the job: its flags, what the script says about it, and what
    must be present to submit to it."""
    title: str
    flags: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    requires: list[Requirement] = dataclasses.field(default_factory=list)
    cluster_notes: list[str] = dataclasses.field(default_factory=list)


def _dataflow(spec: BeamJobSpec) -> _Runner:
    missing = [flag for flag, value in (("--project", spec.project), ("--region", spec.region),
                                        ("--temp-location", spec.temp_location)) if not value]
    if missing:
        raise LaunchError(f"beam dataflow needs {', '.join(missing)}")
    local = [p for p in [*spec.inputs, spec.output, spec.temp_location] if "://" not in p]
    if local:
        raise LaunchError("Dataflow workers cannot read this machine's files; use gs:// "
                          f"paths. Received: {', '.join(local)}")
    job_name = spec.job_name or dns_name("hccr", spec.task or "preprocess",
                                         os.path.basename(spec.output.rstrip("/")) or "out")
    runner = _Runner("Google Cloud Dataflow",
                     ["--runner", "DataflowRunner", "--project", spec.project, "--region",
                      spec.region, "--temp_location", spec.temp_location, "--job_name",
                      job_name])
    if spec.image:
        runner.flags += ["--sdk_container_image", spec.image]
        runner.notes.append(f"Workers run the container {spec.image} (hccr installed in it).")
    else:
        runner.flags += ["--setup_file", spec.setup_file or REPO_SETUP]
        runner.notes.append("Workers install hccr from --setup_file (a source package of this "
                            "repository).")
    if spec.num_workers:
        runner.flags += ["--num_workers", str(spec.num_workers)]
    if spec.max_num_workers:
        runner.flags += ["--max_num_workers", str(spec.max_num_workers)]
        runner.notes.append(f"Autoscaling up to {spec.max_num_workers} workers.")
    if spec.machine_type:
        runner.flags += ["--machine_type", spec.machine_type]
    runner.notes += ["Credentials: `gcloud auth application-default login`, or "
                     "GOOGLE_APPLICATION_CREDENTIALS.",
                     f"Follow the job: https://console.cloud.google.com/dataflow/jobs?project="
                     f"{spec.project} (name {job_name})."]
    runner.requires.append(Requirement(
        "module", "apitools", "DataflowRunner needs Beam's Google Cloud extra: pip install "
                              "'apache-beam[gcp]' (the version of apache-beam installed)"))
    return runner


def _flink(spec: BeamJobSpec) -> _Runner:
    master = spec.flink_master or f"localhost:{DEFAULT_FLINK_PORT}"
    return _portable(spec, "Flink", master, _endpoint(master, DEFAULT_FLINK_PORT),
                     ["--runner", "FlinkRunner", "--flink_master", master],
                     "Flink master (JobManager REST)")


def _spark(spec: BeamJobSpec) -> _Runner:
    master = spec.spark_master or f"spark://localhost:{DEFAULT_SPARK_PORT}"
    if "://" not in master:
        master = f"spark://{master}"
    return _portable(spec, "Spark", master, _endpoint(master, DEFAULT_SPARK_PORT),
                     ["--runner", "SparkRunner", "--spark_master_url", master], "Spark master")


def _portable(spec: BeamJobSpec, engine: str, master: str, endpoint: str,
              runner_flags: list[str], what: str) -> _Runner:
    """Flink or Spark (`engine`), reached through Beam's portable job server."""
    env_flags, env_notes = _environment(spec.environment_type, spec.image, spec.worker_pool)
    title = f"Apache {engine}"
    runner = _Runner(title, runner_flags + env_flags)
    runner.notes = [f"Beam starts its {engine} job server (a Java program, downloaded on first "
                    f"use unless --{engine.lower()}_job_server_jar is given after `--`); it "
                    f"submits the pipeline to {master}.", *env_notes]
    if spec.parallelism:
        runner.flags += ["--parallelism", str(spec.parallelism)]
    runner.requires = [Requirement("program", "java", f"Beam's {title} job server is a Java "
                                                      "program: install a JRE (11 or 17)"),
                       Requirement("endpoint", endpoint, f"the {what}: start the cluster, or "
                                                         "give its address")]
    return runner


def _endpoint(url: str, default_port: int) -> str:
    """`http://host:8081`, `spark://host:7077`, `host` -> `host:port`."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    return rest if sep and port.isdigit() and host else f"{rest}:{default_port}"


def _environment(environment_type: str | None, image: str | None,
                 worker_pool: str | None) -> tuple[list[str], list[str]]:
    """Portable runners (Flink, Spark): where the Python workers run. Flags and comments."""
    kind = (environment_type or ("DOCKER" if image else "EXTERNAL" if worker_pool
                                 else "LOOPBACK")).upper()
    if kind not in ENVIRONMENTS:
        raise LaunchError(f"--environment-type must be one of {', '.join(ENVIRONMENTS)}; "
                          f"Received: {environment_type!r}")
    flags = ["--environment_type", kind]
    if kind == "DOCKER":
        if not image:
            raise LaunchError("--environment-type DOCKER needs --image: an SDK container "
                              "with hccr installed; build one with "
                              f"`{image_build_command()}`")
        flags += ["--environment_config", image]
        notes = [f"DOCKER: every runner worker starts the Python SDK container {image},",
                 f"which must have hccr installed: `{image_build_command(image)}`."]
    elif kind == "EXTERNAL":
        pool = worker_pool or "localhost:50000"
        flags += ["--environment_config", pool]
        notes = [f"EXTERNAL: a Beam worker pool already runs beside each runner worker at {pool}",
                 "(python -m apache_beam.runners.worker.worker_pool_main, with hccr installed)."]
    elif kind == "PROCESS":
        flags += ["--environment_config", '{"command": "/opt/apache/beam/boot"}']
        notes = ["PROCESS: runner workers start the SDK harness /opt/apache/beam/boot "
                 "(installed on every node)."]
    else:
        notes = ["LOOPBACK: the runner calls back into this driver process to run the Python "
                 "steps;", "for a small job or a runner on this machine (use DOCKER or "
                 "EXTERNAL at scale)."]
    return flags, notes


def _dask(spec: BeamJobSpec) -> _Runner:
    address, endpoint = _dask_address(spec.dask_address)
    port = endpoint.rpartition(":")[2]
    return _Runner(
        "a Dask cluster", ["--runner", "DaskRunner", "--dask_client_address", address],
        [f"This machine runs the driver; the Dask scheduler at {address} hands the shard tasks "
         f"to its workers."],
        [Requirement("module", "distributed",
                     "Beam's DaskRunner needs Dask: pip install 'apache-beam[dask]'"),
         Requirement("endpoint", endpoint,
                     f"the Dask scheduler: start it with `dask scheduler --port {port}` and its "
                     f"workers with `dask worker {address}`")],
        _dask_cluster_notes(address, port, spec.num_workers))


def _dask_address(address: str | None) -> tuple[str, str]:
    """`host:port` or `tcp://host:port` -> (`tcp://host:port`, `host:port`)."""
    address = address or f"tcp://localhost:{DEFAULT_DASK_PORT}"
    if "://" not in address:
        address = f"tcp://{address}"
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if scheme != "tcp" or not host or not port.isdigit():
        raise LaunchError(f"--dask-address takes tcp://HOST:PORT (the Dask scheduler). "
                          f"Received: {address!r}")
    return f"tcp://{host}:{port}", f"{host}:{port}"


def _dask_cluster_notes(address: str, port: str, num_workers: int | None) -> list[str]:
    """How to start the scheduler and the workers the job connects to, as comment text."""
    nworkers = num_workers or 1
    return [
        "Start it before this script, with hccr installed where it runs (the same version as "
        "here: the job refuses workers that run other hccr code, so restart them after an "
        "update). Every worker reads input files and writes shards itself: --input and "
        "--output must be paths that every worker sees (a shared filesystem, s3://, gs://).",
        f"  dask scheduler --port {port}",
        f"  dask worker {address} --nworkers {nworkers} --nthreads 1   # on each machine",
        "One thread per worker process: the per-sample work is Python and holds the GIL. The "
        "job gives each shard task its own Dask partition, so the shards spread over the "
        "workers.",
        f"On SLURM, dask-jobqueue starts the workers as batch jobs (SLURMCluster, "
        f"{DASK_JOBQUEUE_URL}); on Kubernetes, the Dask operator runs the scheduler and "
        f"workers (DaskCluster, {DASK_OPERATOR_URL}). Pass the scheduler's address as "
        f"--dask-address.",
        "Beam's DaskRunner keeps no counters: the job then counts the records in the written "
        "shards and rejects files to reconcile.",
    ]


def _direct(spec: BeamJobSpec) -> _Runner:
    runner = _Runner("Beam's local runner (this machine)")
    if spec.num_workers and spec.num_workers > 1:
        runner.flags = ["--direct_num_workers", str(spec.num_workers),
                        "--direct_running_mode", "multi_processing"]
        runner.notes.append(f"{spec.num_workers} worker processes on this machine.")
    else:
        runner.notes.append("One process on this machine.")
    return runner


_RUNNERS = {"dataflow": _dataflow, "flink": _flink, "spark": _spark, "dask": _dask,
            "direct": _direct}  # one per name in RUNNERS
