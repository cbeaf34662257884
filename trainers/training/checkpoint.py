"""Resumable training state: weights, optimizer state, step and callback state, every N steps.

Keras' own `BackupAndRestore` restarts an interrupted epoch from its beginning (so a run
killed mid-epoch trains more steps than an unbroken one) and records a wrong epoch in
mid-epoch backups after a restart; this callback stores the global step instead, and the
trainer resumes exactly there (`trainers.training.train` runs the rest of the interrupted epoch
first).

Layout of `<workdir>/checkpoints/`::

    checkpoint.json              the newest checkpoint's state: {"step", "epoch", "weights",
                                 "callbacks", "learning_rate", "data_contract", "kept", ...}
    ckpt-00000120.weights.h5     model + optimizer variables (Keras `save_weights`)
    ckpt-00000120.json           that checkpoint's own state (for falling back to it)

Every file is written under a temporary name and renamed into place (`os.replace` locally,
`tf.io.gfile.rename` on gs://, s3://, hdfs://), weights first, then its state, then
`checkpoint.json`, so a run killed at any moment (SIGKILL included) resumes from the last
complete checkpoint. A checkpoint that is unreadable anyway (a truncated copy, a full disk) is
skipped with a warning naming the file, and the newest intact one is restored; with none
intact, `CheckpointError` names the directory.

Each checkpoint records the data contract of its run (charset sha256, image size, classes,
task, model): `check_contract` refuses to resume a run on data or a model that disagrees.

Only the chief writes; every process reads (Horovod ranks and tf.distribute workers resume
from the same files).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile

import keras

from beam_preprocess import cli_errors
from beam_preprocess.contract.fileio import has_scheme, join

STATE_FILE = "checkpoint.json"
_WEIGHTS = re.compile(r"^ckpt-(\d{8})\.weights\.h5$")
# The fields of the data contract, in the order a refusal names them.
CONTRACT_FIELDS = ("task", "model", "model_overrides", "num_classes", "image_height",
                   "image_width", "charset_sha256", "ema")


class CheckpointError(cli_errors.UserError):
    """No checkpoint in the directory can be restored (one line naming the directory)."""


class ContractError(ValueError):
    """A run would resume from a checkpoint made for other data or another model."""


def _gfile():
    from beam_preprocess.contract.tfio import gfile
    return gfile()


def _warn(message: str) -> None:
    print(f"hccr-train: warning: {message}", file=sys.stderr, flush=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def write_atomically(path: str, data: bytes) -> None:
    """Writes `data` under a temporary name next to `path`, then renames it into place."""
    gfile = _gfile()
    partial = path + ".partial"
    with gfile.GFile(partial, "wb") as f:
        f.write(data)
    gfile.rename(partial, path, overwrite=True)


def save_model_atomically(model: keras.Model, path: str) -> None:
    """`model.save(path)` (a .keras file) under a temporary name, renamed into place when
    complete: a reader never sees half a model."""
    partial = path[:-len(".keras")] + ".partial.keras"
    model.save(partial)
    _gfile().rename(partial, path, overwrite=True)


def read_state(directory: str) -> dict | None:
    """The newest checkpoint's state (checkpoint.json), or None when there is none.

    Raises:
      ValueError: checkpoint.json exists but is not a JSON object (it names the file).
    """
    path = join(directory, STATE_FILE)
    if not _gfile().exists(path):
        return None
    with _gfile().GFile(path, "r") as f:
        text = f.read()
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(state, dict) or "weights" not in state or "step" not in state:
        raise ValueError(f"{path}: not a checkpoint state (no weights/step)")
    return state


def _read_sidecar(directory: str, weights: str) -> dict | None:
    path = join(directory, weights[:-len(".weights.h5")] + ".json")
    try:
        with _gfile().GFile(path, "r") as f:
            state = json.loads(f.read())
        return state if isinstance(state, dict) and "step" in state else None
    except Exception:  # a missing or damaged side file: the step comes from the file name
        return None


def candidates(directory: str) -> list[tuple[str, dict]]:
    """Restorable checkpoints, newest first: (weights file name, its state).

    The one `checkpoint.json` names comes first; then every other `ckpt-N.weights.h5` in the
    directory by step, with its own state file when it has one (else only the step).
    """
    found: list[tuple[str, dict]] = []
    try:
        newest = read_state(directory)
    except ValueError as e:
        _warn(f"{e}; looking for the newest intact checkpoint in {directory}")
        newest = None
    if newest is not None:
        found.append((newest["weights"], newest))
    gfile = _gfile()
    names = gfile.listdir(directory) if gfile.isdir(directory) else []
    others = sorted(((int(m.group(1)), name) for name in names
                     for m in [_WEIGHTS.match(name.rstrip("/"))] if m), reverse=True)
    for step, name in others:
        if newest is not None and name == newest["weights"]:
            continue
        found.append((name, _read_sidecar(directory, name) or {"step": step, "weights": name}))
    return found


def newest_state(directory: str) -> dict | None:
    """The state of the newest checkpoint (see `candidates`), or None when there is none."""
    found = candidates(directory)
    return found[0][1] if found else None


def check_contract(state: dict | None, contract: dict, where: str) -> None:
    """Refuses to resume from `state` when its data contract differs from `contract`.

    Raises:
      ContractError: one line naming every field that differs, with both values.
    """
    recorded = (state or {}).get("data_contract")
    if not recorded:
        return  # no checkpoint, or one written before contracts were recorded
    differ = [f"{name} {recorded.get(name)!r} in the checkpoint, {contract.get(name)!r} now"
              for name in CONTRACT_FIELDS if name in recorded or name in contract
              if _canonical(recorded.get(name)) != _canonical(contract.get(name))]
    if differ:
        raise ContractError(
            f"{where} holds a run on other data or another model ({'; '.join(differ)}): "
            f"resuming would mix them. Start over with --restart (deletes the checkpoints) or "
            f"use another --workdir")


def _canonical(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


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
      stateful: {name: callback} whose `get_state()` is saved with every checkpoint and
        handed back to its `set_state` on resuming (`callbacks.ResumableState`: plateau,
        early stopping, the best model).
      contract: the data contract recorded with every checkpoint (see `check_contract`).
    """

    def __init__(self, directory: str, *, steps_per_epoch: int, every_steps: int = 0,
                 keep: int = 2, write: bool = True, stateful: dict | None = None,
                 contract: dict | None = None):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.keep = keep
        self.write = write
        self.stateful = stateful or {}
        self.contract = dict(contract or {})
        self.step = 0
        self._running = False
        self._callback_states: dict = {}
        self._kept: list[str] = []
        self._unreadable: list[str] = []  # skipped at restore; deleted by the next save

    # === Restore ===

    def _load(self, model: keras.Model, name: str) -> None:
        path = join(self.directory, name)
        if has_scheme(path):
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, name)
                _gfile().copy(path, local)
                model.load_weights(local)
        else:
            model.load_weights(path)

    def restore(self, model: keras.Model) -> int:
        """Loads the newest intact checkpoint into `model` (built, compiled); returns its step
        (0: no checkpoint).

        Raises:
          CheckpointError: checkpoints exist but none can be loaded.
        """
        found = candidates(self.directory)
        self.step = 0
        if not found:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for number, (name, state) in enumerate(found):
            try:
                self._load(model, name)
            except Exception as e:  # any unreadable file: h5py, OSError, shape mismatch
                _warn(f"checkpoint {join(self.directory, name)} is unreadable "
                      f"({_first_line(e)}); skipping it")
                self._unreadable.append(name)
                continue
            if number:
                _warn(f"restored the older checkpoint {join(self.directory, name)} (step "
                      f"{int(state['step'])})")
            self.step = int(state["step"])
            self._callback_states = state.get("callbacks", {})
            self._kept = [name] + [w for w, _ in found[number + 1:]]
            return self.step
        raise CheckpointError(
            f"{self.directory}: none of its {len(found)} checkpoint(s) can be restored "
            f"({', '.join(name for name, _ in found)}); rerun with --restart to start over")

    def on_train_begin(self, logs=None):
        # Runs after the other callbacks' on_train_begin (it is last in the list), which
        # reset their counters: put back the state of the interrupted run.
        for name, callback in self.stateful.items():
            if name in self._callback_states:
                callback.set_state(self._callback_states[name])

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
        self._callback_states = {name: cb.get_state() for name, cb in self.stateful.items()}

    def save(self) -> None:
        """Writes the weights file, its state, then atomically points checkpoint.json at it."""
        if not self.write:
            return
        gfile = _gfile()
        gfile.makedirs(self.directory)
        name = f"ckpt-{self.step:08d}.weights.h5"
        target = join(self.directory, name)
        # Temporary name, then a rename: a reader never sees half a file under `name`.
        partial = target + ".partial.weights.h5"
        if has_scheme(self.directory):
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, name)
                self.model.save_weights(local)
                gfile.copy(local, partial, overwrite=True)
        else:
            self.model.save_weights(partial)
        gfile.rename(partial, target, overwrite=True)
        kept = [name] + [w for w in self._kept if w != name]
        self._callback_states = {n: cb.get_state() for n, cb in self.stateful.items()}
        state = {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                 "batch": self.step % self.steps_per_epoch, "weights": name,
                 "kept": kept[:self.keep], "callbacks": self._callback_states,
                 "learning_rate": float(keras.ops.convert_to_numpy(
                     self.model.optimizer.learning_rate)),
                 "optimizer_iterations": int(keras.ops.convert_to_numpy(
                     self.model.optimizer.iterations)),
                 "data_contract": self.contract}
        payload = json.dumps(state, indent=1).encode("utf-8")
        write_atomically(join(self.directory, name[:-len(".weights.h5")] + ".json"), payload)
        write_atomically(join(self.directory, STATE_FILE), payload)
        self._kept = kept[:self.keep]
        stale = kept[self.keep:] + [u for u in self._unreadable if u not in self._kept]
        for old in stale:
            for path in (join(self.directory, old),
                         join(self.directory, old[:-len(".weights.h5")] + ".json")):
                if gfile.exists(path):
                    gfile.remove(path)
        where = (f"end of epoch {state['epoch']}" if not state["batch"] else
                 f"epoch {state['epoch'] + 1}, batch {state['batch']}")
        self._unreadable = []
        print(f"hccr-train: checkpoint at step {self.step} ({where})", file=sys.stderr,
              flush=True)


def clear(directory: str) -> None:
    """Deletes a checkpoint directory (a fresh start)."""
    if has_scheme(directory):
        if _gfile().exists(directory):
            _gfile().rmtree(directory)
    else:
        shutil.rmtree(directory, ignore_errors=True)
