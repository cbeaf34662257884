"""The training job every launcher starts: `hccr-train --config NAME ...`, before distribution,
and the comment lines that explain it in a rendered script.

Config names and `--set` overrides are checked against `trainers.training.configs` when it can be
imported (a clear error lists the presets); a `config.json` path, or a machine without the
trainers, is accepted as it is and left to `hccr-train` to check where it runs.
"""
from __future__ import annotations

import dataclasses
import importlib

from launch.errors import LaunchError
from launch.plan import comments

TRAIN_PROGRAM = "hccr-train"


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """What to train.

    Attributes:
      config: a preset name of trainers.training.configs, or a config.json path.
      data: the preprocessed data directory (any tf.io.gfile scheme), passed as --data.
      workdir: checkpoints, logs and the final model, passed as --workdir.
      overrides: `key=value` config overrides, each passed as --set.
      precision: passed as --precision when set.
      command: when not empty, runs instead of hccr-train (any program, e.g. a Horovod
        smoke test); config, data, workdir, overrides and precision are then not used.
    """
    config: str | None = None
    data: str | None = None
    workdir: str | None = None
    overrides: tuple[str, ...] = ()
    precision: str | None = None
    command: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.command and not self.config:
            raise LaunchError("--config NAME is required (or a command after `--`)")

    def argv(self, strategy: str | None = None) -> list[str]:
        """The training command; `strategy` is the distribution the launcher sets up."""
        if self.command:
            return list(self.command)
        argv = [TRAIN_PROGRAM, "--config", self.config]
        if self.data:
            argv += ["--data", self.data]
        if self.workdir:
            argv += ["--workdir", self.workdir]
        for assignment in self.overrides:
            argv += ["--set", assignment]
        if strategy:
            argv += ["--strategy", strategy]
        if self.precision:
            argv += ["--precision", self.precision]
        return argv

    @property
    def name(self) -> str:
        """A short name for the job (job names, file names)."""
        if self.command:
            return "custom"
        base = self.config.rsplit("/", 1)[-1]
        return base.removesuffix(".json")

    @property
    def what(self) -> str:
        """For the first line of a script: what the processes run."""
        return f"config {self.config!r}" if not self.command else f"`{self.command[0]}`"


# === Presets and the comments they give ===


def _configs_module():
    try:
        return importlib.import_module("trainers.training.configs")
    except ImportError:
        return None


def available_presets() -> list[str] | None:
    """The preset names of trainers.training.configs, or None where it cannot be imported."""
    module = _configs_module()
    presets = getattr(module, "PRESETS", None)
    return sorted(presets) if presets is not None else None


def check(job: TrainJob) -> None:
    """Raises LaunchError for an unknown preset or a bad `--set`, where trainers are here."""
    if job.command or job.config.endswith(".json"):
        return
    module = _configs_module()
    presets = available_presets()
    if presets is None:
        return
    if job.config not in presets:
        raise LaunchError(f"unknown config {job.config!r}; presets: {', '.join(presets)} "
                          "(or a config.json path)")
    if job.overrides and hasattr(module, "override"):
        try:
            module.override(module.get_config(job.config), list(job.overrides))
        except (ValueError, TypeError) as e:
            raise LaunchError(str(e)) from None


def batch_note(job: TrainJob, replicas: int) -> str | None:
    """A comment line on the global batch the job will use, where the config can be read."""
    if job.command or job.config.endswith(".json"):
        return None
    module = _configs_module()
    try:
        config = module.override(module.get_config(job.config), list(job.overrides))
        per_replica = int(config.per_replica_batch_size)
        scaling = str(config.lr_scaling)
    except (AttributeError, TypeError, ValueError):  # no trainers here: no note
        return None
    note = (f"config {job.config!r}: per-replica batch {per_replica} x {replicas} "
            f"replicas = global batch {per_replica * replicas}")
    if scaling == "replicas":
        note += "; the learning rate is scaled by the replicas (linear scaling rule)"
    return note


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
    note = batch_note(job, replicas)
    if note:
        lines += comments(f"{note}.")
    return lines
