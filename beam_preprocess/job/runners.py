"""Which Beam runner runs `hccr-preprocess`, and what the job checks before it trusts one.

* `resolve_runner`: `--runner` by short name, including runners Beam itself knows only by
  their dotted path (`DaskRunner`); an unknown name is one line listing the known ones.
* `prepare_dask`: before a Dask run, the scheduler must answer and have workers (else one line
  saying how to start them), the workers must run the driver's code (a worker started before
  the code changed keeps what it imported and would write different bytes), and each shard
  task gets its own Dask partition so the tasks spread over the workers (Beam's DaskRunner
  packs 128 elements per partition by default, which puts every shard of a job on one worker).
* `steps_not_computed`: Beam's DaskRunner computes only the graph of the pipeline's last step;
  a step that the last one does not depend on (a second sink) would be skipped without a word.
  The job refuses to run such a pipeline on Dask.
"""
from __future__ import annotations

import importlib
import socket

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import PipelineVisitor

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
# Runners that Beam loads only by their dotted path: the short name users type -> that path.
EXTRA_RUNNERS = {"DaskRunner": DASK_RUNNER}
DEFAULT_DASK_PORT = 8786
DASK_WAIT_FOR_WORKERS_S = 30.0  # workers started just before the job need a few seconds
DASK_CONNECT_TIMEOUT_S = 10.0


class RunnerError(ValueError):
    """The runner asked for cannot run the job: reported in one line (exit status 2)."""


# === Names ===


def known_runner_names() -> list[str]:
    return sorted(set(StandardOptions.KNOWN_RUNNER_NAMES) | set(EXTRA_RUNNERS))


def _matches(name: str, known: str) -> bool:
    """Beam's own rule: case-insensitive, and the "Runner" suffix may be left out."""
    lowered = name.lower()
    return lowered in (known.lower(), known.lower().removesuffix("runner"))


def resolve_runner(name: str | None) -> str | None:
    """What `--runner` names, as Beam can load it: a short name Beam knows or a dotted path.

    Returns None when no runner is named (the job's local runner).

    Raises:
      RunnerError: an unknown short name (listing the known ones), or a dotted path or
        runner whose module cannot be imported (saying what to install).
    """
    if name is None:
        return None
    if "." in name:
        path = name
    else:
        path = next((p for short, p in EXTRA_RUNNERS.items() if _matches(name, short)), None)
        if path is None:
            known = next((k for k in StandardOptions.KNOWN_RUNNER_NAMES if _matches(name, k)),
                         None)
            if known is None:
                raise RunnerError(f"unknown --runner {name!r}: use one of "
                                  f"{', '.join(known_runner_names())}, or a runner class's "
                                  f"dotted path (package.module.Class)")
            return known
    module_name, _, class_name = path.rpartition(".")
    try:
        getattr(importlib.import_module(module_name), class_name)
    except ImportError as err:
        extra = " (pip install 'apache-beam[dask]')" if path == DASK_RUNNER else ""
        raise RunnerError(f"--runner {name}: cannot import {module_name}: {err}{extra}") from None
    except AttributeError:
        raise RunnerError(f"--runner {name}: {module_name} has no class {class_name}") from None
    return path


# === Dask ===


def _host_port(address: str) -> tuple[str, str, int]:
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise RunnerError(f"--dask_client_address takes tcp://HOST:PORT. Received: {address!r}")
    return scheme, host, int(port)


def start_hint(address: str) -> str:
    """How to start a scheduler (and its workers) at `address`, in words."""
    _, _, port = _host_port(address)
    return (f"start one with `dask scheduler --port {port}` and its workers with "
            f"`dask worker {address}` (hccr-launch beam dask renders both)")


def prepare_dask(options: PipelineOptions, wait_for_workers_s: float | None = None
                 ) -> list[str]:
    """Checks the Dask scheduler the options name and sets one shard task per partition.

    Returns:
      Notes for the job's summary.

    Raises:
      RunnerError: the scheduler does not answer, or has no worker after waiting.
    """
    from apache_beam.runners.dask.dask_runner import DaskOptions
    dask_options = options.view_as(DaskOptions)
    notes = []
    if dask_options.npartitions is None and dask_options.partition_size is None:
        # A shard task is minutes of work on real data: one per partition, so they spread.
        dask_options.partition_size = 1
    address = dask_options.address
    if address is None:
        if dask_options.scheduler_file is None:
            notes.append("no --dask_client_address: Dask started a local cluster for this run")
        return notes
    scheme, host, port = _host_port(address)
    if scheme == "tcp":
        try:  # a refused port fails at once here; Dask's client would retry for 30 s
            socket.create_connection((host, port), timeout=DASK_CONNECT_TIMEOUT_S).close()
        except OSError as err:
            why = err.strerror or str(err) or type(err).__name__
            raise RunnerError(f"cannot reach the Dask scheduler at {address} ({why}): "
                              f"{start_hint(address)}") from None
    import distributed
    wait = DASK_WAIT_FOR_WORKERS_S if wait_for_workers_s is None else wait_for_workers_s
    try:
        client = distributed.Client(address, timeout=dask_options.timeout
                                    if isinstance(dask_options.timeout, int)
                                    else DASK_CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise RunnerError(f"cannot connect to the Dask scheduler at {address} ({err}): "
                          f"{start_hint(address)}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=wait)
        except TimeoutError:
            raise RunnerError(f"the Dask scheduler at {address} has no worker after {wait:g} "
                              f"s: start them with `dask worker {address}`") from None
        workers = client.nthreads()
        stale = _workers_with_other_code(client, address)
    finally:
        client.close()
    if stale:
        raise RunnerError(f"{len(stale)} Dask worker(s) of {address} run other hccr code than "
                          f"this driver (e.g. {stale[0]}; started before beam_preprocess "
                          f"changed, or another install): restart them (`dask worker "
                          f"{address}`) so the shards come from this code")
    one_per_partition = "; one shard task per partition" if dask_options.partition_size == 1 else ""
    notes.append(f"Dask scheduler {address}: {len(workers)} workers, "
                 f"{sum(workers.values())} threads{one_per_partition}")
    return notes


def _workers_with_other_code(client, address: str) -> list[str]:
    """The workers whose imported beam_preprocess differs from this process's."""
    import beam_preprocess
    try:
        # A lambda travels by value: the worker's own (maybe stale) modules do not answer.
        theirs = client.run(lambda: getattr(importlib.import_module("beam_preprocess"),
                                            "SOURCE_SHA256", "older than the check"))
    except ImportError as err:
        raise RunnerError(f"the Dask workers of {address} cannot import beam_preprocess "
                          f"({err}): install hccr where they run (pip install -e .)") from None
    return sorted(w for w, digest in theirs.items() if digest != beam_preprocess.SOURCE_SHA256)


# === The last step ===


class _LeafSteps(PipelineVisitor):
    """The pipeline's primitive steps, in the order the runners visit them."""

    def __init__(self):
        self.steps = []

    def visit_transform(self, applied) -> None:
        self.steps.append(applied)


def _leaves(applied) -> list:
    return [leaf for part in applied.parts for leaf in _leaves(part)] if applied.parts else [
        applied]


def steps_not_computed(pipeline) -> tuple[str, list[str]]:
    """What a runner that computes only the last step's graph (DaskRunner) would skip.

    Returns:
      (the last step's label, the labels of the primitive steps it does not depend on through
      its main or side inputs).
    """
    visitor = _LeafSteps()
    pipeline.visit(visitor)
    if not visitor.steps:
        return "", []
    last = visitor.steps[-1]
    needed, pending = set(), [last]
    while pending:
        step = pending.pop()
        if id(step) in needed:
            continue
        needed.add(id(step))
        inputs = list(step.inputs) + [side.pvalue for side in step.side_inputs]
        for value in inputs:
            producer = getattr(value, "producer", None)
            if producer is not None:
                pending += _leaves(producer)
    return last.full_label, [s.full_label for s in visitor.steps if id(s) not in needed]


def check_last_step_needs_all(pipeline, runner: str) -> None:
    """Raises RunnerError when `runner` (which runs only the last step's graph) would skip a
    step of `pipeline`."""
    last, skipped = steps_not_computed(pipeline)
    if skipped:
        # Name the pipeline's own steps, not the primitives Beam expands them into.
        steps = list(dict.fromkeys(label.split("/", 1)[0] for label in skipped))
        raise RunnerError(f"{runner.rsplit('.', 1)[-1]} computes only what the pipeline's last "
                          f"step ({last}) depends on, and would silently skip these steps: "
                          f"{', '.join(steps)}")


def close_dask_client(result) -> None:
    """Disconnects the driver from the scheduler once the job is done: Beam's DaskRunner leaves
    its client open, and it would keep reconnecting to a scheduler that goes away."""
    result.client.close()


def runs_last_step_only(runner: str | None) -> bool:
    return runner == DASK_RUNNER

