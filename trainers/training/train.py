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
import json
import math
import os
import posixpath
import sys
import time
import warnings

import keras
import tensorflow as tf

import models
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


def _join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if "://" in directory else os.path.join(directory,
                                                                                   name)


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
        split, an empty evaluation split that was asked for, an unknown model, a model that
        does not fit the data's task, or a monitor the task does not report.
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
            "charset_sha256": source.charset.sha256() if source.charset is not None else None}


def synchronize_batchnorm(model: keras.Model) -> int:
    """Mirrored / MultiWorker: every BatchNormalization layer computes its statistics over the
    global batch (an all-reduce per layer and step), so the moving statistics, updated from
    them, stay identical on every replica. Returns the number of layers."""
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
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


def create_model(config: configs.Config, source: input_pipeline.DataSource) -> keras.Model:
    """`models.build_model` for the data's classes and image size (variable width for lines)."""
    overrides = dict(config.model_overrides)
    if config.l2 is not None:
        overrides["l2"] = config.l2
    if config.dropout is not None:
        overrides["dropout"] = config.dropout
    sequence = models.is_sequence_model(config.model)
    if sequence != (source.task == "lines"):
        raise ValueError(f"model {config.model!r} does not fit task {source.task!r}: lines need "
                         f"a CRNN, characters a classifier")
    input_shape = (source.image_height, None, 1) if sequence else source.image_shape
    model = models.build_model(config.model, num_classes=source.num_classes,
                               input_shape=input_shape, **overrides)
    if config.bn_momentum is not None:
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = config.bn_momentum  # read at every training call
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
    kwargs = dict(learning_rate=learning_rate)
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
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                   keras.metrics.SparseTopKCategoricalAccuracy(
                       k=min(5, source.num_classes), name="top5")]
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
        source.charset.save(_join(workdir, "charset.txt"))
    if source.info is not None:
        from trainers.serving import inference
        info = inference.ModelInfo.from_dataset(source.info, config.model)
        with open_binary(_join(workdir, inference.MODEL_INFO_FILE), "wb") as f:
            f.write((info.to_json() + "\n").encode("utf-8"))


def _write_json(path: str, payload: dict) -> None:
    checkpoint_lib.write_atomically(
        path, (json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
        .encode("utf-8"))


def save_model_atomically(model: keras.Model, path: str) -> None:
    """`model.save(path)` under a temporary name, renamed into place when complete."""
    partial = path[:-len(".keras")] + ".partial.keras"
    model.save(partial)
    gfile().rename(partial, path, overwrite=True)


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
    stateful = {}
    if config.reduce_lr_on_plateau:
        stateful["plateau"] = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=config.plateau_factor,
            patience=config.plateau_patience, min_lr=config.min_learning_rate,
            verbose=verbose)
    if config.early_stopping:
        stateful["early_stopping"] = keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=config.early_stopping_patience,
            verbose=verbose)
    if dist.is_chief:
        # Only the chief writes models and logs.
        stateful["best"] = keras.callbacks.ModelCheckpoint(
            _join(workdir, "best.keras"), monitor=monitor, mode=mode, save_best_only=True)
    callback_list += list(stateful.values())
    if dist.is_chief:
        callback_list.append(callbacks_lib.HistoryCSV(_join(workdir, "history.csv")))
        if config.tensorboard:
            callback_list.append(keras.callbacks.TensorBoard(
                _join(workdir, "tensorboard"), update_freq="epoch", profile_batch=0))
    ckpt.stateful = stateful
    callback_list.append(ckpt)
    return callback_list


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
    # === Distribution and precision (before anything touches devices) ===
    dist = strategy.setup(config.strategy, num_cpu_devices=config.num_cpu_devices,
                          allreduce=config.horovod_allreduce)
    policy = precision.apply(config.precision)
    keras.utils.set_random_seed(config.seed)

    source = open_data(config, data_dir)
    check_data(config, source, data_dir)
    contract = data_contract(config, source)
    checkpoint_dir = _join(workdir, "checkpoints")
    if not restart:
        checkpoint_lib.check_contract(checkpoint_lib.newest_state(checkpoint_dir), contract,
                                      checkpoint_dir)
    global_batch = config.per_replica_batch_size * dist.num_replicas
    spe = steps_per_epoch(config, source, global_batch)
    total_steps = spe * config.epochs
    warmup_steps = int(round(config.warmup_epochs * spe))
    peak_lr = peak_learning_rate(config, dist.num_replicas)
    run_info = {"distribution": dist.describe(), "precision": policy,
                "per_replica_batch_size": config.per_replica_batch_size,
                "global_batch_size": global_batch,
                "dataset_batch_size": dist.dataset_batch_size(config.per_replica_batch_size),
                "steps_per_epoch": spe, "total_steps": total_steps,
                "warmup_steps": warmup_steps, "peak_learning_rate": peak_lr,
                "task": source.task, "num_classes": source.num_classes,
                "image_shape": list(source.image_shape),
                "train_examples": source.counts.get(config.train_split)}
    _log(f"{dist.kind}: {dist.num_replicas} replica(s), {dist.num_workers} worker(s); "
         f"{policy}; batch {config.per_replica_batch_size}/replica, {global_batch} global; "
         f"{spe} steps/epoch x {config.epochs}; peak learning rate {peak_lr:g}", dist)
    if dist.is_chief:
        if restart:
            _log(f"--restart: deleting {checkpoint_dir}", dist)
            checkpoint_lib.clear(checkpoint_dir)
        gfile().makedirs(workdir)
        configs.save(config, _join(workdir, "config.json"))
        _write_json(_join(workdir, "run_info.json"), run_info)
        write_companions(workdir, config, source)

    # === Data ===
    curriculum = None
    if config.curriculum_start_fraction < 1.0 and config.curriculum_epochs > 0:
        curriculum = tf.Variable(source.num_classes, dtype=tf.int32, trainable=False,
                                 name="curriculum_classes")
    augment = augment_lib.AugmentParams.from_config(config) if config.augment else None
    train_ds = input_pipeline.make_dataset(
        source, config.train_split, batch_size=dist.dataset_batch_size(
            config.per_replica_batch_size), training=True, augment=augment,
        shard=dist.input_shard, num_input_workers=dist.num_workers,
        shuffle_buffer=config.shuffle_buffer, cache=config.cache, seed=config.seed,
        curriculum_classes=curriculum, bucket_boundaries=config.line_bucket_boundaries)
    eval_ds = None
    if config.eval_split:
        # Horovod: every rank evaluates the whole split, so validation-driven callbacks
        # (plateau, early stopping) take the same decision on every rank.
        eval_ds = input_pipeline.make_dataset(
            source, config.eval_split, batch_size=dist.dataset_batch_size(
                config.per_replica_batch_size), training=False, cache=config.cache,
            bucket_boundaries=config.line_bucket_boundaries, take_batches=config.eval_steps)

    # === Model and optimizer ===
    with dist.scope():
        model = create_model(config, source)
        if (config.sync_batchnorm and dist.kind in ("mirrored", "multi_worker")
                and dist.num_replicas > 1):
            synchronize_batchnorm(model)  # tf.distribute: one set of statistics per step
        optimizer = create_optimizer(config, dist, policy, total_steps=total_steps,
                                     warmup_steps=warmup_steps)
        compile_model(model, optimizer, config, source, dist)
        optimizer.build(model.trainable_variables)
    run_info["parameters"] = model.count_params()

    # === Callbacks ===
    ckpt = checkpoint_lib.ResumableCheckpoint(
        checkpoint_dir, steps_per_epoch=spe, every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints, write=dist.is_chief, contract=contract)
    with dist.scope():
        start_step = dist.agree(0 if restart else ckpt.restore(model))
    ckpt.step = start_step
    if start_step:
        _log(f"resuming from step {start_step} (epoch {start_step // spe + 1}, batch "
             f"{start_step % spe} of {spe})", dist)
    if start_step >= total_steps:
        _log(f"checkpoint is at step {start_step} >= {total_steps}: nothing to train", dist)

    monitor, mode = monitor_and_mode(config, has_eval=eval_ds is not None)
    throughput = callbacks_lib.Throughput(global_batch)
    callback_list = create_callbacks(
        config, dist, workdir, ckpt, throughput, start_step=start_step, steps_per_epoch=spe,
        warmup_steps=warmup_steps, peak_lr=peak_lr, curriculum=curriculum,
        num_classes=source.num_classes, has_eval=eval_ds is not None)
    # A stop signal (SLURM's USR1 before the time limit, SIGTERM on requeue or preemption):
    # checkpoint at the next step and raise preemption.Preempted (hccr-train exits 75).
    guard = preemption.PreemptionGuard(dist, ckpt)
    callback_list.append(guard)
    callback_list += list(extra_callbacks or [])

    # === Training: the rest of an interrupted epoch first, then whole epochs ===
    verbose = callbacks_lib.fit_verbosity(config.verbose) if dist.is_chief else 0
    history: dict = {}
    epoch, step_in_epoch = divmod(start_step, spe)
    fits = []
    if step_in_epoch and epoch < config.epochs:
        fits.append((epoch, epoch + 1, spe - step_in_epoch))
        epoch += 1
    if epoch < config.epochs:
        fits.append((epoch, config.epochs, spe))
    for initial_epoch, end_epoch, steps in fits:
        with _finite_eval_quiet(), guard.installed(), source.naming_damaged_shards():
            result = model.fit(train_ds, epochs=end_epoch, initial_epoch=initial_epoch,
                               steps_per_epoch=steps, validation_data=eval_ds, shuffle=False,
                               callbacks=callback_list, verbose=verbose)
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
        if model.stop_training:
            break

    # === Final metrics ===
    final = {key: float(values[-1]) for key, values in history.items() if values}
    if eval_ds is not None and not any(k.startswith("val_") for k in final):
        with _finite_eval_quiet(), source.naming_damaged_shards():
            evaluated = model.evaluate(eval_ds, verbose=0, return_dict=True)
        final.update({f"val_{k}": float(v) for k, v in evaluated.items()})
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
    metrics = dict(final)
    metrics.update({
        "step": ckpt.step,
        "optimizer_iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
        "epochs_completed": ckpt.step // spe,
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
    if history.get(monitor):
        values = history[monitor]
        metrics[f"best_{monitor}"] = float(max(values) if mode == "max" else min(values))
    if dist.is_chief:
        if config.save_final_model:
            save_model_atomically(model, _join(workdir, "final.keras"))
        _write_json(_join(workdir, "metrics.json"), metrics)
        _write_json(_join(workdir, "run_info.json"), run_info)
        if gfile().exists(_join(workdir, "history.csv")):  # absent when no epoch ended
            curves.write_curves(_join(workdir, "history.csv"), _join(workdir, "curves.png"),
                                steps_per_epoch=spe)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in final.items()
                        if isinstance(v, float) and math.isfinite(v))
    _log(f"done at step {ckpt.step}: {summary}; {throughput.images_per_second:.1f} images/s",
         dist)
    return metrics
