"""Training and evaluation: one `train_and_evaluate(config, workdir, data_dir)` for every
model, device count, distribution strategy and precision, through `model.fit`.

    metrics = train_and_evaluate(configs.get_config("demo"), "runs/demo", "data/chars")

What the work directory holds (written by the chief only):

    config.json        the effective config (preset + overrides)
    run_info.json      distribution, precision, batch sizes, learning rate, steps
    charset.txt        the classes, and model_info.json: what evaluation and export need
    checkpoints/       the resumable state (trainers/training/checkpoint.py); a rerun of the same
                       command continues from it, and refuses to when the data or the model
                       changed (`restart=True` / hccr-train --restart starts over)
    best.keras         the best model so far by `config.monitor`
    final.keras        the model at the end of training
    history.csv        per-epoch metrics and learning rate; tensorboard/ the same for TensorBoard
    metrics.json       the final metrics (also returned)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import warnings

import keras
import tensorflow as tf

import models
from beam_preprocess.contract.fileio import join
from beam_preprocess.contract.tfio import gfile  # tf.io.gfile with tensorflow-io's schemes
from trainers.training import augment as augment_lib
from trainers.training import callbacks as callbacks_lib
from trainers.training import checkpoint as checkpoint_lib
from trainers.training import (
    configs,
    curves,
    input_pipeline,
    losses,
    precision,
    preemption,
    strategy,
)
from trainers.training import ema as ema_lib
from trainers.training import init_from as init_from_lib


@contextlib.contextmanager
def _finite_eval_quiet():
    """Silences Keras' "ran out of data" warning: the evaluation split is one finite pass
    whose length Keras cannot know (training data repeats forever and never runs out)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def _log(message: str, dist=None) -> None:
    if dist is None or dist.is_chief:
        print(f"hccr-train: {message}", file=sys.stderr, flush=True)


# === Building blocks ===


def open_data(config: configs.Config, data_dir: str) -> input_pipeline.DataSource:
    """The data source named by `--data` for this config's dataset kind."""
    if config.dataset == "mnist":
        return input_pipeline.open_digits(data_dir, seed=config.seed)
    return input_pipeline.open_preprocessed(data_dir)


def check_data(config: configs.Config, source: input_pipeline.DataSource,
               data_dir: str) -> None:
    """Refuses a run that cannot do what the config asks, before anything is written.

    Raises:
      ValueError: a split that does not exist (naming those that do), an empty training
        split, an empty evaluation split that was asked for, an unknown model, a model
        argument the model does not take, a model that does not fit the data's task, or a
        monitor the task does not report.
    """
    where = data_dir if config.dataset == "preprocessed" else f"mnist data {data_dir!r}"
    for field in ("train_split", "eval_split"):
        split = getattr(config, field)
        if split and split not in source.counts:
            raise input_pipeline.MissingSplitError(split, sorted(source.counts), where)
    if source.counts[config.train_split] < 1:
        raise ValueError(f"{where}: split {config.train_split!r} (train_split) has 0 "
                         f"examples: nothing to train on")
    if config.eval_split and source.counts[config.eval_split] < 1:
        raise ValueError(f"{where}: split {config.eval_split!r} (eval_split) has 0 examples; "
                         f"choose another split or --set eval_split= to evaluate nothing")
    if config.model not in models.available_models():
        raise ValueError(f"invalid config: model={config.model!r}; allowed: one of "
                         f"{', '.join(models.available_models())}")
    accepted = models.model_arguments(config.model)
    for name, value in model_arguments(config).items():
        if name not in accepted:
            field = name if name in _MODEL_FIELDS else "model_overrides"
            raise ValueError(f"invalid config: {field} sets {name}={value!r}, which model "
                             f"{config.model!r} does not take; its arguments: "
                             f"{', '.join(accepted)}")
    if models.is_sequence_model(config.model) != (source.task == "lines"):
        raise ValueError(f"model {config.model!r} does not fit task {source.task!r} of "
                         f"{where}: lines need a CRNN, characters a classifier")
    if source.task == "lines" and not config.monitor.endswith("loss"):
        raise ValueError(f"invalid config: monitor={config.monitor!r}; allowed for text lines: "
                         f"val_loss or loss (a CRNN reports no accuracy while training)")


def data_contract(config: configs.Config, source: input_pipeline.DataSource) -> dict:
    """What a checkpoint is only valid for: the data's classes, image size and task, and the
    model (see `checkpoint_lib.check_contract`)."""
    return {"task": source.task, "model": config.model,
            "model_overrides": dict(config.model_overrides),
            "num_classes": source.num_classes, "image_height": source.image_height,
            "image_width": source.image_width,
            "charset_sha256": source.charset.sha256() if source.charset is not None else None,
            # The optimizer's weight averages are part of its saved state, present or not:
            # Keras skips an optimizer state with another variable count, with a warning only.
            **({"ema": True} if config.ema_momentum else {})}


def batchnorm_layers(model: keras.Model) -> list:
    """Every BatchNormalization layer of `model`, nested models included (`layers`, the
    public list of a model's layers, does not descend into nested models by itself)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += batchnorm_layers(layer)
    return found


def synchronize_batchnorm(model: keras.Model) -> int:
    """Mirrored / MultiWorker: every BatchNormalization layer computes its statistics over the
    global batch (an all-reduce per layer and step), so the moving statistics, updated from
    them, stay identical on every replica. Returns the number of layers."""
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.synchronized = True  # read at every training call
    return len(layers)


def replicas_in_sync(model: keras.Model, digests: list[dict[str, str]]) -> dict:
    """Compares the replicas' variables: trainable weights and statistics separately.

    Returns:
      {"trainable_in_sync", "statistics_in_sync": bools, "differing": [variable paths]}.
    """
    trainable = {v.path for v in model.trainable_weights}
    differing = sorted(path for path in digests[0]
                       if len({d.get(path) for d in digests}) > 1)
    return {"trainable_in_sync": not any(p in trainable for p in differing),
            "statistics_in_sync": not any(p not in trainable for p in differing),
            "differing": differing}


# Config fields that are model-builder arguments when set (None: the model's default).
_MODEL_FIELDS = ("l2", "dropout", "bn_momentum")


def model_arguments(config: configs.Config) -> dict:
    """The builder arguments of `config.model`: `model_overrides`, then the l2, dropout and
    bn_momentum fields that are set."""
    arguments = dict(config.model_overrides)
    for field in _MODEL_FIELDS:
        if getattr(config, field) is not None:
            arguments[field] = getattr(config, field)
    return arguments


def create_model(config: configs.Config, source: input_pipeline.DataSource) -> keras.Model:
    """`models.build_model` for the data's classes and image size (variable width for lines)."""
    sequence = models.is_sequence_model(config.model)
    if sequence != (source.task == "lines"):
        raise ValueError(f"model {config.model!r} does not fit task {source.task!r}: lines need "
                         f"a CRNN, characters a classifier")
    input_shape = (source.image_height, None, 1) if sequence else source.image_shape
    return models.build_model(config.model, num_classes=source.num_classes,
                              input_shape=input_shape, **model_arguments(config))


def build_model(config: configs.Config, source: input_pipeline.DataSource,
                dist: strategy.Distribution) -> keras.Model:
    """The run's model, before it is compiled (call under `dist.scope()`): `create_model`,
    with BatchNorm statistics over the global batch under Mirrored / MultiWorker."""
    model = create_model(config, source)
    if (config.sync_batchnorm and dist.kind in ("mirrored", "multi_worker")
            and dist.num_replicas > 1):
        synchronize_batchnorm(model)  # tf.distribute: one set of statistics per step
    return model


def peak_learning_rate(config: configs.Config, num_replicas: int) -> float:
    """The learning rate after warm-up: scaled by the replicas (linear scaling rule)."""
    return config.learning_rate * (num_replicas if config.lr_scaling == "replicas" else 1)


def create_optimizer(config: configs.Config, dist: strategy.Distribution, policy: str, *,
                     total_steps: int, warmup_steps: int) -> keras.optimizers.Optimizer:
    """The configured optimizer, its schedule, clipping and (mixed_float16) loss scaling.

    Under Horovod the class is the all-reduce subclass from `dist.optimizer_class`; under
    mixed_float16 the loss-scale optimizer is the outer one, so the all-reduce happens before
    its finite check.
    """
    peak = peak_learning_rate(config, dist.num_replicas)
    if config.lr_schedule == "cosine":
        decay_steps = max(total_steps - warmup_steps, 1)
        if warmup_steps:
            learning_rate = keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps, alpha=config.cosine_alpha, warmup_target=peak,
                warmup_steps=warmup_steps)
        else:
            learning_rate = keras.optimizers.schedules.CosineDecay(
                peak, decay_steps, alpha=config.cosine_alpha)
    else:
        # Constant; LinearWarmup raises it during the warm-up, ReduceLROnPlateau may lower it.
        learning_rate = peak / warmup_steps if warmup_steps else peak
    kwargs = dict(learning_rate=learning_rate, **ema_lib.optimizer_kwargs(config.ema_momentum))
    if config.clipnorm:
        kwargs["global_clipnorm"] = config.clipnorm
    classes = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam,
               "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}
    if config.optimizer == "sgd":
        kwargs.update(momentum=config.momentum, nesterov=True)
    if precision.needs_loss_scaling(policy):
        inner = classes[config.optimizer](**kwargs)
        return dist.optimizer_class(keras.optimizers.LossScaleOptimizer)(inner)
    return dist.optimizer_class(classes[config.optimizer])(**kwargs)


def compile_model(model: keras.Model, optimizer, config: configs.Config,
                  source: input_pipeline.DataSource, dist: strategy.Distribution) -> None:
    if source.task == "lines":
        loss, metrics = losses.PackedCTCLoss(), []
    else:
        loss = losses.SparseCrossEntropy(label_smoothing=config.label_smoothing)
        metrics = [losses.MixupSparseAccuracy(name="accuracy"),
                   losses.MixupSparseTopKAccuracy(k=min(5, source.num_classes), name="top5")]
    jit = config.jit_compile
    if dist.kind == "horovod":
        jit = False  # Horovod: its collective ops cannot be XLA-compiled.
    elif source.task == "lines" and jit is None:
        jit = False  # TensorFlow's CTC loss kernel has no XLA implementation.
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                  jit_compile="auto" if jit is None else jit)


def steps_per_epoch(config: configs.Config, source: input_pipeline.DataSource,
                    global_batch_size: int) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    steps = source.num_examples(config.train_split) // global_batch_size
    if steps < 1:
        raise ValueError(f"split {config.train_split!r} has "
                         f"{source.num_examples(config.train_split)} examples, fewer than one "
                         f"global batch of {global_batch_size}")
    return steps


def write_companions(workdir: str, config: configs.Config,
                     source: input_pipeline.DataSource) -> None:
    """charset.txt and model_info.json next to the models, for evaluation and export."""
    from beam_preprocess.contract.fileio import open_binary
    if source.charset is not None:
        source.charset.save(join(workdir, "charset.txt"))
    if source.info is not None:
        from trainers.serving import inference
        info = inference.ModelInfo.from_dataset(source.info, config.model)
        with open_binary(join(workdir, inference.MODEL_INFO_FILE), "wb") as f:
            f.write((info.to_json() + "\n").encode("utf-8"))


def _write_json(path: str, payload: dict) -> None:
    checkpoint_lib.write_atomically(
        path, (json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
        .encode("utf-8"))


def monitor_and_mode(config: configs.Config, has_eval: bool) -> tuple[str, str]:
    """The metric that picks the best model (validation if any) and whether higher is better."""
    monitor = config.monitor if has_eval else config.monitor.replace("val_", "")
    return monitor, "max" if "acc" in monitor or "top" in monitor else "min"


def create_callbacks(config: configs.Config, dist: strategy.Distribution, workdir: str,
                     ckpt: checkpoint_lib.ResumableCheckpoint,
                     throughput: callbacks_lib.Throughput, *, start_step: int,
                     steps_per_epoch: int, warmup_steps: int, peak_lr: float, curriculum,
                     num_classes: int, has_eval: bool) -> list:
    """The callbacks of a run, in the order they must run.

    Distribution sync first; curriculum and warm-up before a step; NaN guard, throughput and
    the learning-rate log after it; plateau and early stopping; then (chief only) the best
    model, CSV and TensorBoard logs; the resumable checkpoint last, so it saves the state
    the others just updated.
    """
    callback_list = list(dist.callbacks())
    if curriculum is not None:
        callback_list.append(callbacks_lib.Curriculum(
            curriculum, num_classes, config.curriculum_start_fraction,
            config.curriculum_epochs))
    if warmup_steps and config.lr_schedule == "constant":
        callback_list.append(callbacks_lib.LinearWarmup(peak_lr, warmup_steps, start_step))
    callback_list += [callbacks_lib.NaNGuard(start_step, steps_per_epoch), throughput,
                      callbacks_lib.LogLearningRate()]
    monitor, mode = monitor_and_mode(config, has_eval)
    verbose = 1 if dist.is_chief else 0
    # EMA: the averaged weights from here (and in every evaluation) up to ema.swap_back.
    ema = ema_lib.EMAWeights() if config.ema_momentum else None
    callback_list += [ema] if ema else []
    stateful = {}
    if config.reduce_lr_on_plateau:
        stateful["plateau"] = callbacks_lib.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=config.plateau_factor,
            patience=config.plateau_patience, min_lr=config.min_learning_rate,
            verbose=verbose)
    if config.early_stopping:
        stateful["early_stopping"] = callbacks_lib.EarlyStopping(
            monitor=monitor, mode=mode, patience=config.early_stopping_patience,
            verbose=verbose)
    if dist.is_chief:
        # Only the chief writes models and logs.
        stateful["best"] = callbacks_lib.BestModel(join(workdir, "best.keras"), monitor, mode)
    callback_list += list(stateful.values())
    if dist.is_chief:
        callback_list.append(callbacks_lib.HistoryCSV(join(workdir, "history.csv")))
        if config.tensorboard:
            callback_list.append(keras.callbacks.TensorBoard(
                join(workdir, "tensorboard"), update_freq="epoch", profile_batch=0))
    callback_list += [ema.swap_back] if ema else []
    ckpt.stateful = stateful
    callback_list.append(ckpt)
    return callback_list


# === The steps of a run ===


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The step arithmetic of a run."""
    global_batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_learning_rate: float


def plan_schedule(config: configs.Config, source: input_pipeline.DataSource,
                  dist: strategy.Distribution) -> Schedule:
    """Batch sizes, steps and the peak learning rate for this many replicas."""
    global_batch = config.per_replica_batch_size * dist.num_replicas
    spe = steps_per_epoch(config, source, global_batch)
    return Schedule(global_batch_size=global_batch, steps_per_epoch=spe,
                    total_steps=spe * config.epochs,
                    warmup_steps=int(round(config.warmup_epochs * spe)),
                    peak_learning_rate=peak_learning_rate(config, dist.num_replicas))


def describe_run(config: configs.Config, source: input_pipeline.DataSource,
                 dist: strategy.Distribution, policy: str, schedule: Schedule) -> dict:
    """run_info.json: distribution, precision, batch sizes, steps, learning rate and data."""
    return {"distribution": dist.describe(), "precision": policy,
            "per_replica_batch_size": config.per_replica_batch_size,
            "global_batch_size": schedule.global_batch_size,
            "dataset_batch_size": dist.dataset_batch_size(config.per_replica_batch_size),
            "steps_per_epoch": schedule.steps_per_epoch, "total_steps": schedule.total_steps,
            "warmup_steps": schedule.warmup_steps,
            "peak_learning_rate": schedule.peak_learning_rate,
            "task": source.task, "num_classes": source.num_classes,
            "image_shape": list(source.image_shape),
            "train_examples": source.counts.get(config.train_split)}


def prepare_workdir(workdir: str, config: configs.Config, source: input_pipeline.DataSource,
                    run_info: dict, *, restart: bool) -> None:
    """The chief's first files: config.json, run_info.json and the companions (charset.txt,
    model_info.json); with `restart`, the old checkpoints are deleted first."""
    if restart:
        checkpoint_dir = join(workdir, "checkpoints")
        _log(f"--restart: deleting {checkpoint_dir}")
        checkpoint_lib.clear(checkpoint_dir)
    gfile().makedirs(workdir)
    configs.save(config, join(workdir, "config.json"))
    _write_json(join(workdir, "run_info.json"), run_info)
    write_companions(workdir, config, source)


@dataclasses.dataclass(frozen=True)
class Datasets:
    train: tf.data.Dataset  # repeats forever; `fit` counts the steps
    eval: tf.data.Dataset | None  # one finite pass (None: no evaluation split)
    curriculum: tf.Variable | None  # the classes the training data keeps, grown by Curriculum


def build_datasets(config: configs.Config, source: input_pipeline.DataSource,
                   dist: strategy.Distribution) -> Datasets:
    """The training and evaluation datasets, batched for this process."""
    curriculum = None
    if config.curriculum_start_fraction < 1.0 and config.curriculum_epochs > 0:
        curriculum = tf.Variable(source.num_classes, dtype=tf.int32, trainable=False,
                                 name="curriculum_classes")
    augment = augment_lib.AugmentParams.from_config(config) if config.augment else None
    batch_size = dist.dataset_batch_size(config.per_replica_batch_size)
    train_ds = input_pipeline.make_dataset(
        source, config.train_split, batch_size=batch_size, training=True, augment=augment,
        shard=dist.input_shard, num_input_workers=dist.num_workers,
        shuffle_buffer=config.shuffle_buffer, cache=config.cache, seed=config.seed,
        curriculum_classes=curriculum, bucket_boundaries=config.line_bucket_boundaries,
        mixup_alpha=config.mixup_alpha)
    eval_ds = None
    if config.eval_split:
        # Horovod: every rank evaluates the whole split, so validation-driven callbacks
        # (plateau, early stopping) take the same decision on every rank.
        eval_ds = input_pipeline.make_dataset(
            source, config.eval_split, batch_size=batch_size, training=False,
            cache=config.cache, bucket_boundaries=config.line_bucket_boundaries,
            take_batches=config.eval_steps)
    return Datasets(train_ds, eval_ds, curriculum)


def compile_for_training(model: keras.Model, config: configs.Config,
                         source: input_pipeline.DataSource, dist: strategy.Distribution,
                         policy: str, schedule: Schedule) -> keras.optimizers.Optimizer:
    """Compiles `model` with the run's optimizer, loss and metrics, and creates the optimizer's
    variables (a checkpoint restores into them). Call under `dist.scope()`."""
    optimizer = create_optimizer(config, dist, policy, total_steps=schedule.total_steps,
                                 warmup_steps=schedule.warmup_steps)
    compile_model(model, optimizer, config, source, dist)
    optimizer.build(model.trainable_variables)
    return optimizer


def resume(ckpt: checkpoint_lib.ResumableCheckpoint, model: keras.Model,
           dist: strategy.Distribution, schedule: Schedule, *, restart: bool) -> int:
    """Restores the newest checkpoint into `model` (compiled); returns the global step the run
    starts at, the chief's in every process (0: none, or `restart`)."""
    with dist.scope():
        start_step = dist.agree(0 if restart else ckpt.restore(model))
    ckpt.step = start_step
    spe = schedule.steps_per_epoch
    if start_step:
        _log(f"resuming from step {start_step} (epoch {start_step // spe + 1}, batch "
             f"{start_step % spe} of {spe})", dist)
    if start_step >= schedule.total_steps:
        _log(f"checkpoint is at step {start_step} >= {schedule.total_steps}: nothing to train",
             dist)
    return start_step


def fit_segments(start_step: int, steps_per_epoch: int,
                 epochs: int) -> list[tuple[int, int, int]]:
    """The `model.fit` calls from `start_step` to the end of the last epoch, as
    (initial_epoch, epochs, steps_per_epoch): the rest of an interrupted epoch first (its own
    call, being shorter), then the whole epochs."""
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    fits = []
    if step_in_epoch and epoch < epochs:
        fits.append((epoch, epoch + 1, steps_per_epoch - step_in_epoch))
        epoch += 1
    if epoch < epochs:
        fits.append((epoch, epochs, steps_per_epoch))
    return fits


def fit(model: keras.Model, data: Datasets, source: input_pipeline.DataSource,
        callback_list: list, guard: preemption.PreemptionGuard, *,
        fits: list[tuple[int, int, int]], verbose: int) -> dict[str, list]:
    """Runs the `fit_segments`, stopping early when a callback stops training; returns the
    per-epoch history of them all."""
    history: dict[str, list] = {}
    for initial_epoch, end_epoch, steps in fits:
        with _finite_eval_quiet(), guard.installed(), source.naming_damaged_shards():
            result = model.fit(data.train, epochs=end_epoch, initial_epoch=initial_epoch,
                               steps_per_epoch=steps, validation_data=data.eval,
                               shuffle=False, callbacks=callback_list, verbose=verbose)
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
        if model.stop_training:
            break
    return history


def last_metrics(model: keras.Model, history: dict[str, list], data: Datasets,
                 source: input_pipeline.DataSource) -> dict[str, float]:
    """The last epoch's metrics; the evaluation split's evaluated now if no epoch did."""
    final = {key: float(values[-1]) for key, values in history.items() if values}
    if data.eval is not None and not any(k.startswith("val_") for k in final):
        with _finite_eval_quiet(), source.naming_damaged_shards():
            evaluated = model.evaluate(data.eval, verbose=0, return_dict=True)
        final.update({f"val_{k}": float(v) for k, v in evaluated.items()})
    return final


def check_replicas(model: keras.Model, dist: strategy.Distribution) -> tuple[list, dict]:
    """The replicas' weight digests and `replicas_in_sync`; warns when the replicas differ."""
    digests = dist.replica_weight_digests(model)
    sync = replicas_in_sync(model, dist.replica_variable_digests(model))
    if sync["differing"]:
        kinds = [name for name, ok in (("trainable weights", sync["trainable_in_sync"]),
                                       ("statistics (non-trainable)",
                                        sync["statistics_in_sync"])) if not ok]
        _log(f"warning: the replicas' {' and '.join(kinds)} differ: "
             f"{', '.join(sync['differing'][:8])}"
             + (f" and {len(sync['differing']) - 8} more" if len(sync["differing"]) > 8
                else ""), dist)
    return digests, sync


def write_outputs(workdir: str, config: configs.Config, model: keras.Model, metrics: dict,
                  run_info: dict) -> None:
    """The chief's files at the end: final.keras, metrics.json, run_info.json, curves.png."""
    if config.save_final_model:
        checkpoint_lib.save_model_atomically(model, join(workdir, "final.keras"))
    _write_json(join(workdir, "metrics.json"), metrics)
    _write_json(join(workdir, "run_info.json"), run_info)
    history_csv = join(workdir, "history.csv")
    if gfile().exists(history_csv):  # absent when no epoch ended
        curves.write_curves(history_csv, join(workdir, "curves.png"),
                            steps_per_epoch=run_info["steps_per_epoch"])


# === The training function ===


def train_and_evaluate(config: configs.Config, workdir: str, data_dir: str, *,
                       extra_callbacks: list | None = None, restart: bool = False) -> dict:
    """Trains `config` on `data_dir`, resuming from `workdir`'s checkpoint if there is one.

    Args:
      config: the effective config.
      workdir: output directory, on any tf.io.gfile scheme (s3:// and hdfs:// through
        tensorflow-io). Only the chief writes to it; every process reads its checkpoint.
      data_dir: a preprocessed directory, or for `dataset="mnist"` an mnist.npz / "digits".
      extra_callbacks: Keras callbacks run after all of the trainer's (every process).
      restart: start over: ignore and delete `workdir`'s checkpoints. Without it a run
        resumes from them, and refuses to when they were made for other data or another
        model (the data contract).

    Returns:
      The final metrics: last epoch's training and validation metrics, the best value of
      `config.monitor`, steps, images/s, batch sizes and the distribution (also written to
      `<workdir>/metrics.json`).

    Raises:
      FloatingPointError: the loss became NaN or infinite (the message names the step).
      ValueError: the config, the data or the checkpoint cannot make this run (a missing or
        empty split, a checkpoint of other data: `check_data`,
        `checkpoint_lib.ContractError`); nothing is written.
      checkpoint_lib.CheckpointError: checkpoints exist but none can be restored.
    """
    start = time.time()
    config.validate()
    # Distribution and precision first: before anything touches devices.
    dist = strategy.setup(config.strategy, num_cpu_devices=config.num_cpu_devices,
                          allreduce=config.horovod_allreduce)
    policy = precision.apply(config.precision)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    # === Refuse what cannot run, before anything is written ===
    source = open_data(config, data_dir)
    check_data(config, source, data_dir)
    contract = data_contract(config, source)
    checkpoint_dir = join(workdir, "checkpoints")
    newest = None if restart else checkpoint_lib.newest_state(checkpoint_dir)
    checkpoint_lib.check_contract(newest, contract, checkpoint_dir)
    if config.init_from and newest is None:  # a resumed run ignores --init-from
        init_from_lib.check_source(config.init_from, source.charset)
    schedule = plan_schedule(config, source, dist)
    run_info = describe_run(config, source, dist, policy, schedule)
    _log(f"{dist.kind}: {dist.num_replicas} replica(s), {dist.num_workers} worker(s); "
         f"{policy}; batch {config.per_replica_batch_size}/replica, "
         f"{schedule.global_batch_size} global; {schedule.steps_per_epoch} steps/epoch x "
         f"{config.epochs}; peak learning rate {schedule.peak_learning_rate:g}", dist)
    if dist.is_chief:
        prepare_workdir(workdir, config, source, run_info, restart=restart)

    # === Data, model, optimizer, and the checkpoint to resume from ===
    data = build_datasets(config, source, dist)
    with dist.scope():
        model = build_model(config, source, dist)
        optimizer = compile_for_training(model, config, source, dist, policy, schedule)
    run_info["parameters"] = model.count_params()
    ckpt = checkpoint_lib.ResumableCheckpoint(
        checkpoint_dir, steps_per_epoch=schedule.steps_per_epoch,
        every_steps=config.checkpoint_every_steps, keep=config.keep_checkpoints,
        write=dist.is_chief, contract=contract)
    start_step = resume(ckpt, model, dist, schedule, restart=restart)
    if config.init_from:  # a new run starts from a trained model; a resumed one ignores it
        _log(init_from_lib.start_from(model, source.charset, config.init_from,
                                      resumed_step=start_step), dist)

    # === Training: the rest of an interrupted epoch first, then whole epochs ===
    throughput = callbacks_lib.Throughput(schedule.global_batch_size)
    callback_list = create_callbacks(
        config, dist, workdir, ckpt, throughput, start_step=start_step,
        steps_per_epoch=schedule.steps_per_epoch, warmup_steps=schedule.warmup_steps,
        peak_lr=schedule.peak_learning_rate, curriculum=data.curriculum,
        num_classes=source.num_classes, has_eval=data.eval is not None)
    # A stop signal (SLURM's USR1 before the time limit, SIGTERM on requeue or preemption):
    # checkpoint at the next check step and raise preemption.Preempted (hccr-train exits 75).
    guard = preemption.PreemptionGuard(dist, ckpt)
    callback_list += [guard, *(extra_callbacks or [])]
    verbose = callbacks_lib.fit_verbosity(config.verbose) if dist.is_chief else 0
    history = fit(model, data, source, callback_list, guard, verbose=verbose,
                  fits=fit_segments(start_step, schedule.steps_per_epoch, config.epochs))
    if config.ema_momentum:
        ema_lib.load_averages(model)  # the final metrics and final.keras use the averages

    # === Final metrics and outputs ===
    final = last_metrics(model, history, data, source)
    digests, sync = check_replicas(model, dist)
    metrics = dict(final)
    metrics.update({
        "step": ckpt.step,
        "optimizer_iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
        "epochs_completed": ckpt.step // schedule.steps_per_epoch,
        "resumed_from_step": start_step,
        "images_per_second": throughput.images_per_second,
        "epoch_seconds": throughput.epoch_seconds,
        "seconds": time.time() - start,
        "replica_weight_digests": digests,
        "weights_in_sync": len(set(digests)) == 1,
        "trainable_in_sync": sync["trainable_in_sync"],
        "statistics_in_sync": sync["statistics_in_sync"],
        "replicas_differ_in": sync["differing"],
        **{k: run_info[k] for k in ("per_replica_batch_size", "global_batch_size",
                                    "steps_per_epoch", "precision", "parameters")},
        "strategy": dist.kind,
        "num_replicas": dist.num_replicas,
    })
    monitor, mode = monitor_and_mode(config, has_eval=data.eval is not None)
    if history.get(monitor):
        values = history[monitor]
        metrics[f"best_{monitor}"] = float(max(values) if mode == "max" else min(values))
    if dist.is_chief:
        write_outputs(workdir, config, model, metrics, run_info)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in final.items()
                        if isinstance(v, float) and math.isfinite(v))
    _log(f"done at step {ckpt.step}: {summary}; {throughput.images_per_second:.1f} images/s",
         dist)
    return metrics
