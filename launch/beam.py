"""Renders the preprocessing job (`hccr-preprocess`, an Apache Beam pipeline) for a runner:
Dataflow, Flink, Spark, a Dask cluster, or Beam's local runner.

This machine runs the driver (`hccr-preprocess` itself), which submits the pipeline to the
runner and waits. The Beam pipeline options are `hccr-preprocess`'s own pass-through flags;
anything after `--` is appended unchanged (more hccr-preprocess or Beam flags).
"""
from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from launch import jobs
from launch.jobs import LaunchError
from launch.plan import (
    FILE,
    Plan,
    Requirement,
    format_command,
    header,
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
                              f"`{jobs.image_build_command()}`")
        flags += ["--environment_config", image]
        notes = [f"DOCKER: every runner worker starts the Python SDK container {image},",
                 f"which must have hccr installed: `{jobs.image_build_command(image)}`."]
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


def beam_plan(runner: str, inputs: Sequence[str], output: str, task: str | None = None,
              extra: Sequence[str] = (), project: str | None = None, region: str | None = None,
              temp_location: str | None = None, image: str | None = None,
              num_workers: int | None = None, max_num_workers: int | None = None,
              machine_type: str | None = None, job_name: str | None = None,
              flink_master: str | None = None, spark_master: str | None = None,
              environment_type: str | None = None, worker_pool: str | None = None,
              parallelism: int | None = None, setup_file: str | None = None,
              setup: Sequence[str] = (), origin: str | None = None,
              dask_address: str | None = None) -> Plan:
    """The driver command of the Beam job on `runner`, as a commented bash script."""
    if runner not in RUNNERS:
        raise LaunchError(f"beam runner must be one of {', '.join(RUNNERS)}; "
                          f"Received: {runner!r}")
    if not inputs or not output:
        raise LaunchError("beam needs --input GLOB (repeatable) and --output DIR")
    command = [PROGRAM]
    for pattern in inputs:
        command += ["--input", pattern]
    command += ["--output", output]
    if task:
        command += ["--task", task]
    job_name = job_name or jobs.dns_name("hccr", task or "preprocess",
                                         os.path.basename(output.rstrip("/")) or "out")
    requires = [Requirement("program", PROGRAM, "the preprocessing job's driver (pip install -e "
                                                ". in this repository)")]
    runner_flags: list[str] = []
    notes: list[str] = []
    cluster_notes: list[str] = []

    if runner == "dataflow":
        missing = [flag for flag, value in (("--project", project), ("--region", region),
                                            ("--temp-location", temp_location)) if not value]
        if missing:
            raise LaunchError(f"beam dataflow needs {', '.join(missing)}")
        local = [p for p in list(inputs) + [output, temp_location] if "://" not in p]
        if local:
            raise LaunchError("Dataflow workers cannot read this machine's files; use gs:// "
                              f"paths. Received: {', '.join(local)}")
        runner_flags = ["--runner", "DataflowRunner", "--project", project, "--region", region,
                        "--temp_location", temp_location, "--job_name", job_name]
        if image:
            runner_flags += ["--sdk_container_image", image]
            notes.append(f"Workers run the container {image} (hccr installed in it).")
        else:
            setup_file = setup_file or REPO_SETUP
            runner_flags += ["--setup_file", setup_file]
            notes.append("Workers install hccr from --setup_file (a source package of this "
                         "repository).")
        if num_workers:
            runner_flags += ["--num_workers", str(num_workers)]
        if max_num_workers:
            runner_flags += ["--max_num_workers", str(max_num_workers)]
            notes.append(f"Autoscaling up to {max_num_workers} workers.")
        if machine_type:
            runner_flags += ["--machine_type", machine_type]
        notes += ["Credentials: `gcloud auth application-default login`, or "
                  "GOOGLE_APPLICATION_CREDENTIALS.",
                  f"Follow the job: https://console.cloud.google.com/dataflow/jobs?project="
                  f"{project} (name {job_name})."]
        requires.append(Requirement("module", "apitools",
                                    "DataflowRunner needs Beam's Google Cloud extra: pip install "
                                    "'apache-beam[gcp]' (the version of apache-beam installed)"))
        title = "Google Cloud Dataflow"
    elif runner in ("flink", "spark"):
        env_flags, env_notes = _environment(environment_type, image, worker_pool)
        if runner == "flink":
            master = flink_master or f"localhost:{DEFAULT_FLINK_PORT}"
            runner_flags = ["--runner", "FlinkRunner", "--flink_master", master]
            endpoint = _endpoint(master, DEFAULT_FLINK_PORT)
            title, what = "Apache Flink", "Flink master (JobManager REST)"
            notes.append("Beam starts its Flink job server (a Java program, downloaded on "
                         "first use unless --flink_job_server_jar is given after `--`); it "
                         f"submits the pipeline to {master}.")
        else:
            master = spark_master or f"spark://localhost:{DEFAULT_SPARK_PORT}"
            if "://" not in master:
                master = f"spark://{master}"
            runner_flags = ["--runner", "SparkRunner", "--spark_master_url", master]
            endpoint = _endpoint(master, DEFAULT_SPARK_PORT)
            title, what = "Apache Spark", "Spark master"
            notes.append("Beam starts its Spark job server (a Java program, downloaded on "
                         "first use unless --spark_job_server_jar is given after `--`); it "
                         f"submits the pipeline to {master}.")
        runner_flags += env_flags
        notes += env_notes
        if parallelism:
            runner_flags += ["--parallelism", str(parallelism)]
        requires += [Requirement("program", "java", f"Beam's {title} job server is a Java "
                                                    "program: install a JRE (11 or 17)"),
                     Requirement("endpoint", endpoint, f"the {what}: start the cluster, or "
                                                       "give its address")]
    elif runner == "dask":
        address, endpoint = _dask_address(dask_address)
        runner_flags = ["--runner", "DaskRunner", "--dask_client_address", address]
        title = "a Dask cluster"
        cluster_notes = _dask_cluster_notes(address, endpoint.rpartition(":")[2], num_workers)
        notes.append(f"This machine runs the driver; the Dask scheduler at {address} hands the "
                     f"shard tasks to its workers.")
        requires += [Requirement("module", "distributed",
                                 "Beam's DaskRunner needs Dask: pip install 'apache-beam[dask]'"),
                     Requirement("endpoint", endpoint,
                                 f"the Dask scheduler: start it with `dask scheduler --port "
                                 f"{endpoint.rpartition(':')[2]}` and its workers with `dask "
                                 f"worker {address}`")]
    else:
        title = "Beam's local runner (this machine)"
        if num_workers and num_workers > 1:
            runner_flags = ["--direct_num_workers", str(num_workers),
                            "--direct_running_mode", "multi_processing"]
            notes.append(f"{num_workers} worker processes on this machine.")
        else:
            notes.append("One process on this machine.")

    lines = header(f"hccr-launch beam: the preprocessing job (hccr-preprocess) on {title}.",
                   origin, "Run it with `bash FILE`: this machine runs the driver, which submits "
                           "the pipeline and waits.\nKeep it and edit it.")
    lines += ["set -euo pipefail"]
    lines += setup_lines(setup, "hccr-preprocess and apache-beam must be on PATH here.")
    if cluster_notes:
        lines += section("The Dask cluster", *cluster_notes)
    lines += section(f"Run: {title}", *notes)
    if extra:
        lines.append(f"# Passed through after `--`: {shlex.join(extra)}")
    lines.append(format_command(command, runner_flags, list(extra), prefix="exec "))
    return Plan("beam", script(lines), jobs.file_stem("hccr", "preprocess", runner) + ".sh",
                ("bash", FILE), tuple(requires))
