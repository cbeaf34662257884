"""Keras callbacks of the trainer: NaN guard, LR warm-up, class curriculum, LR logging,
throughput, and the callbacks whose state a resumed run carries on (plateau, early stopping,
the best model). Checkpointing for resumption is in `trainers/training/checkpoint.py`."""
from __future__ import annotations

import math
import sys
import time
import warnings

import keras
import numpy as np

from trainers.training.checkpoint import save_model_atomically


class NaNGuard(keras.callbacks.Callback):
    """Stops the run with `FloatingPointError` naming the step where the loss became NaN/inf.

    Keras' batch logs hold the running mean of the epoch's loss, which turns non-finite at the
    first non-finite batch, so the reported step is exact. Safe for Keras' asynchronous
    batch-end dispatch (the error surfaces at the next step).

    Args:
      initial_step: global step this `fit` starts at (a resumed run starts past 0).
      steps_per_epoch: to name the epoch and the batch within it.
    """
    async_safe = True

    def __init__(self, initial_step: int = 0, steps_per_epoch: int = 0):
        super().__init__()
        self.step = initial_step
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(
                f"loss is {float(loss)} at step {self.step} (epoch {self.epoch + 1}, batch "
                f"{batch + 1} of {self.steps_per_epoch}): stopping. Lower the learning rate, "
                f"enable gradient clipping (--set clipnorm=1) or check the data.")


class LinearWarmup(keras.callbacks.Callback):
    """Raises the learning rate linearly to `peak` over the first `warmup_steps` steps.

    For a constant learning rate (the cosine schedule has its own warm-up). It sets the rate
    only during the warm-up, so ReduceLROnPlateau owns it afterwards; a run resumed after the
    warm-up keeps the rate restored from its checkpoint.
    """

    def __init__(self, peak: float, warmup_steps: int, initial_step: int = 0):
        super().__init__()
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.step = initial_step

    def on_train_batch_begin(self, batch, logs=None):
        if self.step < self.warmup_steps:
            self.model.optimizer.learning_rate = self.peak * (self.step + 1) / self.warmup_steps
        elif self.step == self.warmup_steps and self.warmup_steps:
            self.model.optimizer.learning_rate = self.peak
        self.step += 1


def curriculum_classes(epoch: int, num_classes: int, start_fraction: float,
                       grow_epochs: int) -> int:
    """Classes trained on in `epoch`: `start_fraction` of them at epoch 0, growing linearly
    to all of them at `grow_epochs`."""
    if grow_epochs <= 0 or start_fraction >= 1.0 or epoch >= grow_epochs:
        return num_classes
    fraction = start_fraction + (1.0 - start_fraction) * epoch / grow_epochs
    return max(1, min(num_classes, int(round(fraction * num_classes))))


class Curriculum(keras.callbacks.Callback):
    """Grows the set of training classes between epochs (the variable the input pipeline's
    filter reads: labels below its value are kept). Batches already prefetched keep the
    previous set for a few steps."""

    def __init__(self, variable, num_classes: int, start_fraction: float, grow_epochs: int):
        super().__init__()
        self.variable = variable
        self.num_classes = num_classes
        self.start_fraction = start_fraction
        self.grow_epochs = grow_epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(curriculum_classes(epoch, self.num_classes, self.start_fraction,
                                                self.grow_epochs))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["curriculum_classes"] = int(self.variable.numpy())


class LogLearningRate(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (CSV and TensorBoard show it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
    """Steady-state training speed, timed from one batch's start to the next (input pipeline
    included), leaving out the first step of every `fit` (tracing) and validation.

    Only batch-begin hooks, which Keras runs synchronously, so batch ends can stay
    asynchronous.

    Args:
      global_batch_size: images per step over all replicas.
    """

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.steps = 0
        self.seconds = 0.0
        self.epoch_seconds: list[float] = []
        self._last = None
        self._first_of_fit = True
        self._epoch_start = None

    def on_train_begin(self, logs=None):
        self._first_of_fit = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._last = None

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        self._close(now)
        self._last = now

    def _close(self, now):
        if self._last is not None:
            if self._first_of_fit:
                self._first_of_fit = False
            else:
                self.steps += 1
                self.seconds += now - self._last
            self._last = None

    def on_test_begin(self, logs=None):
        self._close(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self._close(now)
        self.epoch_seconds.append(now - self._epoch_start)

    @property
    def images_per_second(self) -> float:
        if not self.seconds:
            return float("nan")
        return self.steps * self.global_batch_size / self.seconds


class HistoryCSV(keras.callbacks.Callback):
    """Per-epoch logs as CSV, rewritten whole at every epoch end through tf.io.gfile.

    Unlike Keras' CSVLogger it works on every gfile scheme (s3://, gs://) and keeps one row per
    epoch when a resumed run repeats an epoch whose row was written before the interruption.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.rows: dict[int, dict] = {}

    def on_train_begin(self, logs=None):
        import csv
        import io

        import tensorflow as tf
        if not self.rows and tf.io.gfile.exists(self.path):
            with tf.io.gfile.GFile(self.path, "r") as f:
                for row in csv.DictReader(io.StringIO(f.read())):
                    self.rows[int(row["epoch"])] = row

    def on_epoch_end(self, epoch, logs=None):
        import csv
        import io

        import tensorflow as tf
        self.rows[epoch] = {"epoch": epoch, **{k: float(v) if isinstance(
            v, (int, float, np.floating, np.integer)) else v for k, v in (logs or {}).items()}}
        keys = sorted({k for row in self.rows.values() for k in row} - {"epoch"})
        out = io.StringIO()
        writer = csv.DictWriter(out, ["epoch"] + keys, lineterminator="\n")
        writer.writeheader()
        for number in sorted(self.rows):
            writer.writerow(self.rows[number])
        with tf.io.gfile.GFile(self.path, "w") as f:
            f.write(out.getvalue())


# === Callbacks with resumable state ===
# A resumed run continues mid-training, so the plateau and early-stopping counters and the
# best value so far must survive a restart. Each of these callbacks names the attributes that
# hold its state (`STATE`, name -> type) and reads and writes exactly those through
# `get_state`/`set_state`, which the resumable checkpoint stores in checkpoint.json.


class ResumableState:
    """`get_state`/`set_state` over the attributes named in `STATE` ({name: int or float})."""

    STATE: dict[str, type] = {}

    def _check_state_attributes(self) -> None:
        missing = [name for name in self.STATE if name not in vars(self)]
        if missing:
            keras_class = next(c for c in type(self).__mro__ if c.__module__.startswith("keras"))
            raise RuntimeError(
                f"{type(self).__name__}: keras {keras.__version__}'s {keras_class.__name__} no "
                f"longer keeps {', '.join(missing)}, the state a resumed run restores; update "
                f"STATE in trainers/training/callbacks.py")

    def get_state(self) -> dict:
        """{name: value} of every `STATE` attribute (None while unset, e.g. no best yet)."""
        self._check_state_attributes()
        return {name: None if getattr(self, name) is None else kind(getattr(self, name))
                for name, kind in self.STATE.items()}

    def set_state(self, state: dict) -> None:
        """Puts back what `get_state` returned; names outside `STATE` are ignored."""
        self._check_state_attributes()
        for name, kind in self.STATE.items():
            if name in state:
                setattr(self, name, None if state[name] is None else kind(state[name]))


class EarlyStopping(ResumableState, keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping, whose patience counter and best value survive a resumed run.

    These attributes are not part of Keras' documented API: `_check_state_attributes` fails
    loudly when a Keras release drops one, and tests/test_train_guards.py checks that restoring
    them resumes early stopping exactly where an unbroken run would stop.
    """

    STATE = {"best": float, "wait": int, "stopped_epoch": int, "best_epoch": int}


class ReduceLROnPlateau(ResumableState, keras.callbacks.ReduceLROnPlateau):
    """Keras' ReduceLROnPlateau, whose patience and cooldown counters and best value survive a
    resumed run (the learning rate itself is an optimizer variable, in the weights file).

    Undocumented Keras attributes, checked like `EarlyStopping`'s.
    """

    STATE = {"best": float, "wait": int, "cooldown_counter": int}


class BestModel(ResumableState, keras.callbacks.Callback):
    """Saves the model to `path` at every epoch end that improves `monitor`, like Keras'
    `ModelCheckpoint(save_best_only=True)`, but under a temporary name renamed into place
    (`checkpoint.save_model_atomically`): a run killed mid-save keeps the previous best model
    whole.

    Args:
      path: a `.keras` file (any tf.io.gfile scheme).
      monitor: the logged quantity that decides, e.g. "val_loss".
      mode: "min" or "max": whether lower or higher is better.
    """

    STATE = {"best": float}

    def __init__(self, path: str, monitor: str, mode: str):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"BestModel: mode={mode!r}; allowed: 'min', 'max'")
        if not path.endswith(".keras"):
            raise ValueError(f"BestModel: path={path!r} must end in .keras")
        self.path = path
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None

    def _improves(self, current) -> bool:
        if self.best is None:
            return True
        # keras.ops, as ModelCheckpoint compares: in float32, so the same epochs count as best.
        compare = keras.ops.less if self.mode == "min" else keras.ops.greater
        return bool(compare(current, self.best))

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            # As ModelCheckpoint: without the quantity, every epoch's model is saved.
            warnings.warn(f"Can save best model only with {self.monitor} available.",
                          stacklevel=2)
        elif self._improves(current):
            self.best = float(current)
        else:
            return
        save_model_atomically(self.model, self.path)


def fit_verbosity(setting: int | str, stream=None) -> int:
    """Keras `fit`'s `verbose` for a config's setting.

    "auto": a progress bar within the epoch (1) when `stream` (stdout) is a terminal, one line
    per epoch (2) in logs and CI, where a bar would write thousands of carriage returns. Keras'
    own "auto" means 1 everywhere.
    """
    if setting != "auto":
        return int(setting)
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # a closed or replaced stream
        return 2
