"""The one place that knows how training is distributed.

    dist = strategy.setup("auto")            # before anything else touches TensorFlow devices
    with dist.scope():
        model = ...
        optimizer = dist.optimizer_class(keras.optimizers.Adam)(learning_rate=...)
    model.fit(dataset_of_batch(dist.dataset_batch_size(per_replica)),  # sharded by dist.input_shard
              callbacks=dist.callbacks() + (chief_callbacks if dist.is_chief else []))

Kinds:
  one_device    TensorFlow's default strategy (one CPU or GPU); no distribution code runs.
  mirrored      `tf.distribute.MirroredStrategy` over the GPUs of this host, or over logical
                CPU devices (`num_cpu_devices`, for tests on CPU hosts).
  multi_worker  `tf.distribute.MultiWorkerMirroredStrategy` over the hosts named in TF_CONFIG
                (with a `reduce` that Keras 3's `fit` can use on several workers, see
                `_MultiWorkerMirroredStrategy`). Workers resume from the same checkpoint
                files, so the work directory must be shared storage (gs://, s3://, NFS).
  horovod       one process per device, launched by `horovodrun`; gradients are all-reduced
                explicitly in the optimizer's `apply` and rank 0's state is broadcast at the
                start, because Horovod 0.28's Keras layer does not work with Keras 3 (its
                DistributedOptimizer silently skips the averaging; horovod/horovod#4290).
                BatchNorm statistics are averaged before every evaluation, and every rank
                evaluates the whole validation split, so all ranks take the same decisions.
  auto          horovod under horovodrun/mpirun and in tasks srun started with an MPI plugin
                (PMIx/PMI variables) or several tasks and no TF_CONFIG; multi_worker when
                TF_CONFIG names several tasks; mirrored with several GPUs; else one_device.

The world check: a launcher (horovodrun, mpirun, srun) says in every process how many it
started. Before anything is written, `setup` compares that with the world the process joined
(`hvd.size()`, the TF_CONFIG cluster) and stops with one line naming both numbers and the
likely cause; a Horovod built without MPI under srun or mpirun otherwise trains every task
alone, each writing the same work directory (see `check_world`).

Every distribution-specific line below carries a comment saying which kind it serves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

KINDS = ("one_device", "mirrored", "multi_worker", "horovod")
# Environment variables set by horovodrun (Gloo or MPI), mpirun and srun's MPI plugins
# (--mpi=pmi2, --mpi=pmix) in every rank.
HOROVOD_RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
# What a launcher started, innermost launcher first: horovodrun's own variables win over the
# SLURM job's around it (a horovodrun inside an sbatch script sees the job's SLURM_NTASKS, and
# the batch step has no SLURM_STEP_NUM_TASKS); srun sets SLURM_STEP_NUM_TASKS in its tasks only.
LAUNCHER_SIZE_VARIABLES = (("HOROVOD_SIZE", "horovodrun"), ("OMPI_COMM_WORLD_SIZE", "mpirun"),
                           ("PMI_SIZE", "the PMI launcher"), ("SLURM_STEP_NUM_TASKS", "srun"))
# Present when an MPI launcher (mpirun, srun --mpi=pmix/pmi2) started the process.
MPI_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK")
HOROVOD_MPI_REBUILD = ("rebuild Horovod with MPI (apt-get install libopenmpi-dev openmpi-bin, "
                       "then HOROVOD_WITH_MPI=1 pip install --no-build-isolation --no-cache-dir "
                       "--force-reinstall horovod==0.28.1; bash scripts/setup_env.sh does both)")


class WorldMismatch(ValueError):
    """The processes did not join the world their launcher started (one line says why)."""


def launched_world(environ=None) -> tuple[int, str] | None:
    """`(processes, launcher)` as the innermost launcher of this process says, or None when no
    launcher variable is set (a process started by hand)."""
    environ = os.environ if environ is None else environ
    for name, launcher in LAUNCHER_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value), f"{launcher} ({name}={value})"
    return None


def check_world(kind: str, joined: int, environ=None, mpi_built: bool | None = None) -> None:
    """Raises WorldMismatch when this process joined a world of `joined` processes but its
    launcher started a different number.

    Args:
      kind: the resolved strategy kind.
      joined: processes in the world this one joined (`hvd.size()`, TF_CONFIG's cluster; 1 for
        one_device and mirrored).
      environ: the environment (default os.environ).
      mpi_built: horovod only: `hvd.mpi_built()`, to name the likely cause.
    """
    environ = os.environ if environ is None else environ
    launched = launched_world(environ)
    if launched is None or launched[0] == joined:
        return
    started, launcher = launched
    mpi_launch = [name for name in MPI_LAUNCH_VARIABLES if name in environ]
    if kind == "horovod" and mpi_built is False and mpi_launch:
        cause = (f"Horovod is built without MPI, so under an MPI launcher ({mpi_launch[0]} is "
                 f"set) every process forms its own world: {HOROVOD_MPI_REBUILD}, or launch "
                 "with horovodrun --gloo")
    elif kind == "horovod" and launcher.startswith("srun") and not mpi_launch:
        cause = ("srun started the tasks without an MPI plugin, so Horovod cannot join them: "
                 "srun --mpi=pmix (see `srun --mpi=list`), or horovodrun --gloo")
    elif kind == "multi_worker":
        cause = ("every process needs the same TF_CONFIG listing all of them, each with its own "
                 "task index")
    elif kind in ("one_device", "mirrored"):
        cause = (f"--strategy {kind} trains in each process alone (all writing the same work "
                 "directory): use --strategy horovod or multi_worker, or start one process")
    else:
        cause = "the processes did not all join one world (check the launcher's log)"
    raise WorldMismatch(f"{launcher} started {started} process(es) but this one joined a "
                        f"{kind} world of {joined}: {cause}")


def detect() -> str:
    """The kind "auto" resolves to in this process."""
    if any(name in os.environ for name in HOROVOD_RANK_VARIABLES):
        return "horovod"
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) > 1:
        return "multi_worker"
    launched = launched_world()
    if launched and launched[0] > 1:
        # Several processes and no TF_CONFIG: only Horovod can join them (and check_world
        # says why when it cannot), never one trainer per process on the same work directory.
        return "horovod"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "one_device"


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices (before TensorFlow initializes)."""
    if num_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != num_devices:
            raise ValueError(f"num_cpu_devices={num_devices} must be set before TensorFlow "
                             f"initializes its devices (run training in a fresh process)"
                             ) from None


@dataclasses.dataclass
class Distribution:
    """The resolved distribution of this process.

    Attributes:
      kind: one of KINDS.
      strategy: the tf.distribute strategy models and optimizers are created under (the
        default strategy for one_device and horovod).
      num_replicas: replicas that train in sync, over all processes (global batch =
        per-replica batch * num_replicas).
      num_workers: processes that each run an input pipeline.
      worker_index: this process's index among them.
      is_chief: whether this process writes checkpoints, logs and exports.
      allreduce: horovod only; False turns the gradient all-reduce off (the tests' control).
    """
    kind: str
    strategy: tf.distribute.Strategy
    num_replicas: int = 1
    num_workers: int = 1
    worker_index: int = 0
    is_chief: bool = True
    allreduce: bool = True

    def scope(self):
        """Create the model and optimizer inside this (tf.distribute places their variables)."""
        if self.kind in ("mirrored", "multi_worker"):
            return self.strategy.scope()  # tf.distribute: mirrored variables
        return contextlib.nullcontext()

    def dataset_batch_size(self, per_replica_batch_size: int) -> int:
        """The batch size of the tf.data pipeline of this process."""
        if self.kind == "horovod":
            return per_replica_batch_size  # Horovod: one pipeline and one replica per rank
        # tf.distribute: the pipeline yields global batches and the strategy splits them.
        return per_replica_batch_size * self.num_replicas

    @property
    def input_shard(self) -> tuple | None:
        """`(num_shards, index)` when the pipeline must shard itself, else None."""
        if self.kind == "horovod":
            return (self.num_workers, self.worker_index)  # Horovod: shard files by rank
        return None  # tf.distribute: auto-shard policy on the dataset

    def optimizer_class(self, cls: type) -> type:
        """`cls`, or under Horovod a subclass that averages gradients over the ranks in `apply`.

        Works for `LossScaleOptimizer` too: its `apply` checks the gradients for inf/NaN before
        calling the inner optimizer, so all-reducing in the outer `apply` makes every rank
        take the same decision (a rank that skips the all-reduce alone would hang the job).
        """
        if self.kind != "horovod" or not self.allreduce:
            return cls
        return _allreduce_class(cls)  # Horovod: explicit gradient all-reduce

    def callbacks(self) -> list:
        """Callbacks every process needs (not only the chief)."""
        if self.kind == "horovod":
            return [HorovodSync()]  # Horovod: same state on every rank
        return []

    def replica_weight_digests(self, model: keras.Model) -> list[str]:
        """A digest of the model's weights from every process (equal when in sync)."""
        digest = weights_digest(model)
        if self.kind == "horovod":
            import horovod.tensorflow as hvd
            return list(hvd.allgather_object(digest))  # Horovod: gather from every rank
        if self.kind in ("mirrored", "multi_worker"):
            # tf.distribute: one digest per copy of the variables on this worker's devices,
            # then (multi_worker) those of every worker.
            local = [_replica_digest(model, i) for i in range(self._local_replicas)]
            return self._every_worker(local)
        return [digest]

    def replica_variable_digests(self, model: keras.Model) -> list[dict[str, str]]:
        """Per replica, {variable path: sha256 of its value}: says which variables differ."""
        if self.kind == "horovod":
            import horovod.tensorflow as hvd
            # Horovod: gather every rank's digests.
            return list(hvd.allgather_object(_variable_digests(model, 0)))
        if self.kind in ("mirrored", "multi_worker"):
            # tf.distribute: one set per copy of the variables on this worker's devices, then
            # (multi_worker) those of every worker, in the same variable order everywhere.
            local = [_variable_digests(model, i) for i in range(self._local_replicas)]
            paths = list(local[0])
            rows = self._every_worker([[d[p] for p in paths] for d in local])
            return [dict(zip(paths, row, strict=True)) for row in rows]
        return [_variable_digests(model, 0)]

    @property
    def _local_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync // max(self.num_workers, 1)

    def _every_worker(self, local: list):
        """multi_worker: the per-replica sha256 hex digests (`local[i]`: a digest or a list of
        digests of local replica i) of every replica of every worker, in replica order, through
        an all-gather; elsewhere `local` itself. Without it a worker would compare only the
        copies on its own devices, which with one device per worker always agree."""
        if self.kind != "multi_worker" or self.num_workers < 2:
            return local
        nested = not isinstance(local[0], str)
        rows = np.stack([_digest_bytes(d if nested else [d]) for d in local])
        count = len(local)

        values = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(rows[ctx.replica_id_in_sync_group % count][None]))

        @tf.function  # eager collectives of MultiWorkerMirroredStrategy are slow
        def gather(per_replica):
            return self.strategy.gather(per_replica, axis=0)  # tf.distribute: all-gather

        gathered = [_digest_hex(row) for row in gather(values).numpy()]
        return gathered if nested else [row[0] for row in gathered]

    def agree(self, value: int) -> int:
        """The chief's value of `value` in every process (e.g. the step a run resumes from)."""
        if self.kind == "horovod":
            import horovod.tensorflow as hvd
            return int(hvd.broadcast_object(value, root_rank=0))  # Horovod: rank 0's value
        # tf.distribute: workers read the same checkpoint files (shared storage).
        return value

    def any_process(self, flag: bool) -> bool:
        """Whether `flag` is true in any process; a collective every process must call at the
        same point (it also serves as a barrier)."""
        if self.kind == "horovod":
            import horovod.tensorflow as hvd
            # Horovod: the maximum over the ranks.
            total = hvd.allreduce(tf.constant(int(flag), tf.int32), op=hvd.Max,
                                  name="any_process")
            return bool(int(total))
        if self.kind == "multi_worker":
            if "_sum_over_replicas" not in self.__dict__:
                @tf.function  # eager collectives of MultiWorkerMirroredStrategy are slow
                def sum_over_replicas(value):
                    # tf.distribute: a sum over every replica of every worker.
                    per_replica = self.strategy.run(tf.identity, args=(value,))
                    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                                axis=None)
                self._sum_over_replicas = sum_over_replicas
            return bool(int(self._sum_over_replicas(tf.constant(int(flag), tf.int32))))
        return flag

    def describe(self) -> dict:
        return {"kind": self.kind, "num_replicas": self.num_replicas,
                "num_workers": self.num_workers, "worker_index": self.worker_index,
                "is_chief": self.is_chief,
                "devices": (list(self.strategy.extended.worker_devices)
                            if self.kind in ("mirrored", "multi_worker") else [])}


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight's bytes, in model order."""
    h = hashlib.sha256()
    for v in model.weights:
        h.update(keras.ops.convert_to_numpy(v).tobytes())
    return h.hexdigest()


def _digest_bytes(digests: list[str]) -> np.ndarray:
    """sha256 hex digests as one int32 row (32 values of 0-255 each), for a collective."""
    return np.frombuffer(b"".join(bytes.fromhex(d) for d in digests), np.uint8).astype(np.int32)


def _digest_hex(row: np.ndarray) -> list[str]:
    """The inverse of `_digest_bytes`."""
    data = row.astype(np.uint8).tobytes()
    return [data[i:i + 32].hex() for i in range(0, len(data), 32)]


def _replica_digest(model: keras.Model, replica: int) -> str:
    """tf.distribute: digest of the copies of the weights held by one local replica."""
    h = hashlib.sha256()
    for v in model.weights:
        value = getattr(v, "value", v)
        copies = getattr(value, "values", None) or (value,)
        h.update(copies[min(replica, len(copies) - 1)].numpy().tobytes())
    return h.hexdigest()


def _variable_digests(model: keras.Model, replica: int) -> dict[str, str]:
    """{variable path: sha256 of the copy held by one local replica} (tf.distribute copies;
    the value itself elsewhere)."""
    digests = {}
    for v in model.weights:
        value = getattr(v, "value", v)
        copies = getattr(value, "values", None) or (value,)
        digests[v.path] = hashlib.sha256(
            copies[min(replica, len(copies) - 1)].numpy().tobytes()).hexdigest()
    return digests


_ALLREDUCE_CLASSES: dict = {}


def _allreduce_class(cls: type) -> type:
    """Horovod: a subclass of optimizer `cls` whose `apply` averages gradients over ranks."""
    if cls in _ALLREDUCE_CLASSES:
        return _ALLREDUCE_CLASSES[cls]
    import horovod.tensorflow as hvd

    def apply(self, grads, trainable_variables=None):
        present = [i for i, g in enumerate(grads) if g is not None]
        # Horovod: average each gradient over all ranks (fused into few collective calls).
        reduced = hvd.grouped_allreduce([grads[i] for i in present], op=hvd.Average)
        grads = list(grads)
        for i, g in zip(present, reduced):
            grads[i] = g
        return cls.apply(self, grads, trainable_variables)

    subclass = type(f"AllReduce{cls.__name__}", (cls,), {"apply": apply,
                                                        "__module__": __name__})
    subclass = keras.saving.register_keras_serializable(package="hccr_horovod")(subclass)
    _ALLREDUCE_CLASSES[cls] = subclass
    return subclass


class HorovodSync(keras.callbacks.Callback):
    """Horovod: keeps the ranks' models identical where gradients alone do not.

    - At train start, rank 0's model and optimizer variables are broadcast to every rank (the
      optimizer is built before `fit` calls this, by Keras' symbolic build or by a checkpoint
      restore, so its slots exist). `v.value` is passed because Horovod's own broadcast
      helpers fail on Keras 3 variables.
    - Training metrics in the epoch logs are averaged over the ranks.
    - Before every evaluation and at train end, floating-point non-trainable variables
      (BatchNorm moving statistics, computed from each rank's own batches) are averaged, so
      every rank evaluates the same model, gets the same validation metrics and takes the same
      plateau / early-stopping decision, and all ranks finish with identical weights.
    """

    def on_train_begin(self, logs=None):
        import horovod.tensorflow as hvd
        variables = list(self.model.variables) + list(self.model.optimizer.variables)

        @tf.function
        def broadcast():
            for v in variables:
                v.assign(hvd.broadcast(v.value, root_rank=0))  # Horovod: rank 0 -> all

        broadcast()

    def _average_non_trainable(self):
        import horovod.tensorflow as hvd
        variables = [v for v in self.model.non_trainable_variables
                     if "float" in str(v.dtype)]
        if not variables:
            return

        @tf.function
        def average():
            # Horovod: mean of the BatchNorm statistics over the ranks.
            reduced = hvd.grouped_allreduce([v.value for v in variables], op=hvd.Average)
            for v, r in zip(variables, reduced):
                v.assign(r)

        average()

    def on_test_begin(self, logs=None):
        self._average_non_trainable()

    def on_epoch_end(self, epoch, logs=None):
        # Horovod: report training metrics averaged over the ranks, not rank 0's alone
        # (validation metrics are already equal: every rank evaluates the whole split).
        if not logs:
            return
        import horovod.tensorflow as hvd
        keys = sorted(k for k, v in logs.items() if not k.startswith("val_")
                      and isinstance(v, (int, float)))
        values = hvd.allreduce(tf.constant([float(logs[k]) for k in keys], tf.float64),
                               op=hvd.Average, name="epoch_logs")
        for key, value in zip(keys, values.numpy()):
            logs[key] = float(value)

    def on_train_end(self, logs=None):
        self._average_non_trainable()


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """tf.distribute MultiWorker: `reduce` also takes nested structures.

    Keras 3's `fit` reduces the first `(x, y)` batch with `strategy.reduce` to build the model
    (keras/src/backend/tensorflow/trainer.py, `_maybe_symbolic_build`); with more than one
    worker, MultiWorkerMirroredStrategy's `reduce` accepts only a single value and fails on
    the tuple ("Attempt to convert a value (PerReplica...)"); Keras then reduces each scalar
    metric with `axis=0`, which fails on a scalar. This reduces element by element, scalars
    across replicas only.
    """

    def reduce(self, reduce_op, value, axis):
        reduce_one = super().reduce

        def reduce_value(v):
            local = self.experimental_local_results(v)[0]
            # Keras also reduces scalar metrics "along axis 0" (trainer.py, reduce_per_replica).
            return reduce_one(reduce_op, v, None if local.shape.rank == 0 else axis)

        return tf.nest.map_structure(reduce_value, value)


def setup(kind: str = "auto", *, num_cpu_devices: int = 1, allreduce: bool = True
          ) -> Distribution:
    """Resolves and initializes the distribution of this process.

    Call before creating any model, dataset or tensor (device set-up must come first).

    Args:
      kind: "auto" or one of KINDS.
      num_cpu_devices: split the CPU into this many logical devices (mirrored on CPU hosts).
      allreduce: horovod only: False disables the gradient all-reduce (tests' control run).

    Returns:
      The Distribution.
    """
    split_cpu(num_cpu_devices)
    if kind == "auto":
        kind = detect()
    if kind not in KINDS:
        raise ValueError(f"strategy must be 'auto' or one of {KINDS}. Received: {kind!r}")

    if kind == "one_device":
        check_world(kind, 1)  # not one process of several, all writing the same workdir
        return Distribution(kind, tf.distribute.get_strategy())

    if kind == "mirrored":
        check_world(kind, 1)  # not one process of several, all writing the same workdir
        gpus = tf.config.list_logical_devices("GPU")
        cpus = tf.config.list_logical_devices("CPU")
        # tf.distribute: one replica per GPU, else per logical CPU device.
        devices = [d.name for d in (gpus or cpus)]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Distribution(kind, strategy, num_replicas=strategy.num_replicas_in_sync)

    if kind == "multi_worker":
        # tf.distribute: TF_CONFIG's cluster against the launcher's, before the strategy
        # waits for workers that were never started.
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        check_world(kind, sum(len(cluster.get(t, [])) for t in ("chief", "worker")))
        # tf.distribute: the cluster comes from TF_CONFIG; collectives over gRPC.
        strategy = _MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        task_type, task_id = resolver.task_type, resolver.task_id
        cluster = resolver.cluster_spec().as_dict()
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        index = (task_id or 0) + (1 if task_type == "worker" and "chief" in cluster else 0)
        chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                         and "chief" not in cluster) or task_type is None
        return Distribution(kind, strategy, num_replicas=strategy.num_replicas_in_sync,
                            num_workers=max(workers, 1), worker_index=index, is_chief=chief)

    import horovod.tensorflow as hvd
    hvd.init()  # Horovod: join the ranks started by horovodrun, mpirun or srun --mpi
    check_world(kind, hvd.size(), mpi_built=hvd.mpi_built())  # Horovod: the whole world
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        # Horovod: one GPU per process, chosen by the local rank.
        tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
        tf.config.experimental.set_memory_growth(gpus[hvd.local_rank()], True)
    return Distribution(kind, tf.distribute.get_strategy(), num_replicas=hvd.size(),
                        num_workers=hvd.size(), worker_index=hvd.rank(),
                        is_chief=hvd.rank() == 0, allreduce=allreduce)
