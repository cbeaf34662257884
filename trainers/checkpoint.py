"""Resumable training state: weights, optimizer state, step and callback state, every N steps.

Keras' own `BackupAndRestore` restarts an interrupted epoch from its beginning (so a run
killed mid-epoch trains more steps than an unbroken one) and records a wrong epoch in
mid-epoch backups after a restart; this callback stores the global step instead, and the
trainer resumes exactly there (`trainers.train` runs the rest of the interrupted epoch first).

Layout of `<workdir>/checkpoints/`::

    checkpoint.json              {"step", "epoch", "weights", "callbacks", "learning_rate", ...}
    ckpt-00000120.weights.h5     model + optimizer variables (Keras `save_weights`)

The weights file is complete before `checkpoint.json` is atomically replaced to name it, so a
run killed at any moment (SIGKILL included) resumes from the last complete checkpoint.
Only the chief writes; every process reads (Horovod ranks and tf.distribute workers resume
from the same files).
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import sys
import tempfile

import keras

from trainers import callbacks as callbacks_lib

STATE_FILE = "checkpoint.json"


def _gfile():
    from beam_preprocess.tfio import gfile
    return gfile()


def _join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if "://" in directory else os.path.join(directory,
                                                                                   name)


def read_state(directory: str) -> dict | None:
    """The last complete checkpoint's state, or None when there is none."""
    path = _join(directory, STATE_FILE)
    if not _gfile().exists(path):
        return None
    with _gfile().GFile(path, "r") as f:
        return json.loads(f.read())


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves the training state every `every_steps` steps (or at every epoch end).

    Args:
      directory: checkpoint directory (any tf.io.gfile scheme).
      steps_per_epoch: steps of one epoch (the step counter maps to epoch and batch).
      every_steps: save period in steps; 0 saves at the end of every epoch. A save due on the
        last step of an epoch waits for the epoch's end, so it includes the validation-driven
        callback state.
      keep: weights files kept.
      write: whether this process writes (the chief) or only restores.
      stateful: {name: callback} whose best/wait/cooldown counters are saved and restored
        (ReduceLROnPlateau, EarlyStopping, ModelCheckpoint).
    """

    def __init__(self, directory: str, *, steps_per_epoch: int, every_steps: int = 0,
                 keep: int = 2, write: bool = True, stateful: dict | None = None):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.keep = keep
        self.write = write
        self.stateful = stateful or {}
        self.step = 0
        self._running = False
        self._callback_states: dict = {}

    # === Restore ===

    def restore(self, model: keras.Model) -> int:
        """Loads the last checkpoint into `model` (built, compiled); returns its step (0: none)."""
        state = read_state(self.directory)
        if state is None:
            self.step = 0
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        path = _join(self.directory, state["weights"])
        if "://" in path:
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, state["weights"])
                _gfile().copy(path, local)
                model.load_weights(local)
        else:
            model.load_weights(path)
        self.step = int(state["step"])
        self._callback_states = state.get("callbacks", {})
        return self.step

    def on_train_begin(self, logs=None):
        # Runs after the other callbacks' on_train_begin (it is last in the list), which
        # reset their counters: put back the state of the interrupted run.
        for name, callback in self.stateful.items():
            if name in self._callback_states:
                callbacks_lib.set_callback_state(callback, self._callback_states[name])

    # === Save ===

    # A step counts as done when the next one starts, or validation or the epoch end comes:
    # batch-begin hooks run synchronously, so Keras may run batch ends asynchronously.

    def _finish_step(self) -> bool:
        if not self._running:
            return False
        self._running = False
        self.step += 1
        return True

    def on_train_batch_begin(self, batch, logs=None):
        if self._finish_step() and self.every_steps and self.step % self.every_steps == 0 \
                and self.step % self.steps_per_epoch != 0:
            self.save()
        self._running = True

    def on_test_begin(self, logs=None):
        self._finish_step()

    def on_epoch_end(self, epoch, logs=None):
        self._finish_step()
        if not self.every_steps or self.step % self.every_steps == 0 \
                or self.step % self.steps_per_epoch == 0:
            self.save()

    def on_train_end(self, logs=None):
        self._finish_step()
        self._callback_states = {name: callbacks_lib.callback_state(cb)
                                 for name, cb in self.stateful.items()}

    def save(self) -> None:
        """Writes the weights file, then atomically points checkpoint.json at it."""
        if not self.write:
            return
        gfile = _gfile()
        gfile.makedirs(self.directory)
        name = f"ckpt-{self.step:08d}.weights.h5"
        target = _join(self.directory, name)
        if "://" in self.directory:
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, name)
                self.model.save_weights(local)
                gfile.copy(local, target, overwrite=True)
        else:
            partial = target + ".partial.weights.h5"
            self.model.save_weights(partial)
            os.replace(partial, target)
        previous = read_state(self.directory) or {}
        kept = [name] + [w for w in previous.get("kept", []) if w != name]
        self._callback_states = {n: callbacks_lib.callback_state(cb)
                                 for n, cb in self.stateful.items()}
        state = {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                 "batch": self.step % self.steps_per_epoch, "weights": name,
                 "kept": kept[:self.keep], "callbacks": self._callback_states,
                 "learning_rate": float(keras.ops.convert_to_numpy(
                     self.model.optimizer.learning_rate)),
                 "optimizer_iterations": int(keras.ops.convert_to_numpy(
                     self.model.optimizer.iterations))}
        tmp_state = _join(self.directory, STATE_FILE + ".tmp")
        with gfile.GFile(tmp_state, "w") as f:
            f.write(json.dumps(state, indent=1))
        gfile.rename(tmp_state, _join(self.directory, STATE_FILE), overwrite=True)
        for old in kept[self.keep:]:
            path = _join(self.directory, old)
            if gfile.exists(path):
                gfile.remove(path)
        where = (f"end of epoch {state['epoch']}" if not state["batch"] else
                 f"epoch {state['epoch'] + 1}, batch {state['batch']}")
        print(f"hccr-train: checkpoint at step {self.step} ({where})", file=sys.stderr,
              flush=True)


def clear(directory: str) -> None:
    """Deletes a checkpoint directory (a fresh start)."""
    if "://" in directory:
        if _gfile().exists(directory):
            _gfile().rmtree(directory)
    else:
        shutil.rmtree(directory, ignore_errors=True)
