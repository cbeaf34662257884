"""Resumable checkpoints: atomic writes, falling back past an unreadable newest checkpoint,
one line naming the directory when none is intact, the data contract, the callbacks' state
across a resume, best.keras written atomically, and the preemption guard's check steps."""
import json
import os
import threading

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from beam_preprocess import cli_errors
from trainers.training import callbacks as callbacks_lib
from trainers.training import checkpoint as checkpoint_lib
from trainers.training import preemption

CONTRACT = {"task": "chars", "model": "lenet", "model_overrides": {}, "num_classes": 3,
            "image_height": 8, "image_width": 8, "charset_sha256": "a" * 64}


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _saved(directory, steps, keep=3):
    """A checkpoint directory with one checkpoint per step; returns {step: kernel}."""
    ckpt = checkpoint_lib.ResumableCheckpoint(str(directory), steps_per_epoch=10, keep=keep,
                                              contract=CONTRACT)
    kernels = {}
    for step in steps:
        model = _model(seed=step)
        ckpt.set_model(model)
        ckpt.step = step
        ckpt.save()
        kernels[step] = model.layers[0].kernel.numpy().copy()
    return kernels


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)


def test_every_file_is_renamed_into_place_and_has_its_own_state(tmp_path):
    _saved(tmp_path, [1, 2])
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint.json", "ckpt-00000001.json", "ckpt-00000001.weights.h5",
                     "ckpt-00000002.json", "ckpt-00000002.weights.h5"]  # no temporary left
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["weights"] == "ckpt-00000002.weights.h5" and state["step"] == 2
    assert state["data_contract"] == CONTRACT
    assert json.loads((tmp_path / "ckpt-00000001.json").read_text())["step"] == 1


def test_keep_prunes_weights_and_their_state(tmp_path):
    _saved(tmp_path, [1, 2, 3], keep=2)
    assert not (tmp_path / "ckpt-00000001.weights.h5").exists()
    assert not (tmp_path / "ckpt-00000001.json").exists()


def test_a_truncated_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys):
    kernels = _saved(tmp_path, [1, 2, 3])
    _truncate(tmp_path / "ckpt-00000003.weights.h5")
    model = _model(seed=99)
    ckpt = checkpoint_lib.ResumableCheckpoint(str(tmp_path), steps_per_epoch=10)
    assert ckpt.restore(model) == 2
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), kernels[2])
    err = capsys.readouterr().err
    assert f"checkpoint {tmp_path / 'ckpt-00000003.weights.h5'} is unreadable" in err
    assert "restored the older checkpoint" in err and "(step 2)" in err
    # The next save replaces the unreadable file rather than keeping it around.
    ckpt.set_model(model)
    ckpt.step = 4
    ckpt.save()
    assert not (tmp_path / "ckpt-00000003.weights.h5").exists()
    assert ckpt.restore(_model()) == 4


def test_a_damaged_checkpoint_json_falls_back_to_the_files_own_states(tmp_path, capsys):
    kernels = _saved(tmp_path, [1, 2])
    (tmp_path / "checkpoint.json").write_text('{"step": 2, "wei')
    model = _model(seed=99)
    assert checkpoint_lib.ResumableCheckpoint(str(tmp_path), steps_per_epoch=10
                                              ).restore(model) == 2
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), kernels[2])
    assert "checkpoint.json: not valid JSON" in capsys.readouterr().err


def test_no_intact_checkpoint_is_one_line_naming_the_directory(tmp_path):
    _saved(tmp_path, [1, 2])
    for step in (1, 2):
        _truncate(tmp_path / f"ckpt-0000000{step}.weights.h5")
    with pytest.raises(checkpoint_lib.CheckpointError) as caught:
        checkpoint_lib.ResumableCheckpoint(str(tmp_path), steps_per_epoch=10).restore(_model())
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: none of its 2 checkpoint(s) can be restored")
    assert "--restart" in message and "\n" not in message
    assert isinstance(caught.value, cli_errors.UserError)  # one line from every CLI


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    _saved(tmp_path, [1])
    model = _model(seed=5)
    ckpt = checkpoint_lib.ResumableCheckpoint(str(tmp_path), steps_per_epoch=10)
    ckpt.set_model(model)
    ckpt.step = 2

    def dies(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", dies)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save()
    assert not (tmp_path / "ckpt-00000002.weights.h5").exists()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 1
    assert checkpoint_lib.ResumableCheckpoint(str(tmp_path), steps_per_epoch=10
                                              ).restore(_model()) == 1


def test_contract_names_every_field_that_differs_with_both_values():
    state = {"data_contract": CONTRACT}
    checkpoint_lib.check_contract(state, dict(CONTRACT), "runs/x/checkpoints")  # same: fine
    checkpoint_lib.check_contract(None, CONTRACT, "runs/x/checkpoints")  # no checkpoint
    checkpoint_lib.check_contract({"step": 3}, CONTRACT, "old")  # before contracts existed
    changed = dict(CONTRACT, charset_sha256="b" * 64, num_classes=4)
    with pytest.raises(checkpoint_lib.ContractError) as caught:
        checkpoint_lib.check_contract(state, changed, "runs/x/checkpoints")
    message = str(caught.value)
    assert message.startswith("runs/x/checkpoints holds a run on other data or another model")
    assert f"charset_sha256 {'a' * 64!r} in the checkpoint, {'b' * 64!r} now" in message
    assert "num_classes 3 in the checkpoint, 4 now" in message
    assert "--restart" in message and "\n" not in message


# === Callback state across a resume ===


def _resumed(directory, callback_class, kwargs, before, after, model):
    """Drives `callback_class` through the monitored values `before`, saves a checkpoint, and
    drives a fresh instance, restored from it, through `after` (as a resumed run would)."""
    directory = str(directory)
    first = callback_class(**kwargs)
    first.set_model(model)
    first.on_train_begin()
    for epoch, value in enumerate(before):
        first.on_epoch_end(epoch, {"val_loss": value})
    ckpt = checkpoint_lib.ResumableCheckpoint(directory, steps_per_epoch=1,
                                              stateful={"cb": first})
    ckpt.set_model(model)
    ckpt.step = len(before)
    ckpt.save()
    second = callback_class(**kwargs)
    resumed = checkpoint_lib.ResumableCheckpoint(directory, steps_per_epoch=1,
                                                 stateful={"cb": second})
    resumed.restore(model)
    second.set_model(model)
    second.on_train_begin()  # resets the counters, as at every fit's start ...
    resumed.on_train_begin()  # ... and the checkpoint (last in the list) puts them back
    for epoch, value in enumerate(after, start=len(before)):
        second.on_epoch_end(epoch, {"val_loss": value})
    return first, second


def test_early_stopping_resumes_its_patience_and_best(tmp_path):
    model = _model()
    kwargs = dict(monitor="val_loss", mode="min", patience=2)
    # Unbroken: best 0.8 at epoch 1, no improvement at epochs 2 and 3: stops at epoch 3.
    first, second = _resumed(tmp_path, callbacks_lib.EarlyStopping, kwargs, [1.0, 0.8, 0.9],
                             [0.85], model)
    assert first.get_state() == {"best": 0.8, "wait": 1, "stopped_epoch": 0, "best_epoch": 1}
    assert second.get_state() == {"best": 0.8, "wait": 2, "stopped_epoch": 3, "best_epoch": 1}
    assert model.stop_training
    # Without the restored state 0.85 would be a first "best" and training would go on.
    fresh = callbacks_lib.EarlyStopping(**kwargs)
    fresh.set_model(_model())
    fresh.on_train_begin()
    fresh.on_epoch_end(3, {"val_loss": 0.85})
    assert not fresh.model.stop_training


def test_reduce_lr_on_plateau_resumes_its_patience(tmp_path):
    model = _model()
    model.optimizer.learning_rate = 1.0
    kwargs = dict(monitor="val_loss", mode="min", patience=2, factor=0.5)
    first, second = _resumed(tmp_path, callbacks_lib.ReduceLROnPlateau, kwargs, [1.0, 1.1],
                             [1.2], model)
    assert first.get_state() == {"best": 1.0, "wait": 1, "cooldown_counter": 0}
    # The patience ran out across the resume.
    assert keras.ops.convert_to_numpy(model.optimizer.learning_rate) == 0.5
    assert second.get_state()["wait"] == 0


def test_a_keras_release_without_the_saved_attributes_fails_loudly():
    callback = callbacks_lib.EarlyStopping(monitor="val_loss", mode="min", patience=2)
    callback.on_train_begin()
    del callback.wait  # what a Keras release that renamed it would leave
    with pytest.raises(RuntimeError, match=r"EarlyStopping: keras .* no longer keeps wait, "
                                           r"the state a resumed run restores"):
        callback.get_state()
    with pytest.raises(RuntimeError, match="no longer keeps wait"):
        callback.set_state({"wait": 1})


# === best.keras ===


def test_best_model_is_saved_on_improvement_and_renamed_into_place(tmp_path, monkeypatch):
    path = str(tmp_path / "best.keras")
    best = callbacks_lib.BestModel(path, "val_accuracy", "max")
    best.set_model(_model(seed=1))
    best.on_epoch_end(0, {"val_accuracy": 0.5})
    saved = keras.models.load_model(path, compile=False).get_weights()
    best.set_model(_model(seed=2))
    best.on_epoch_end(1, {"val_accuracy": 0.4})  # worse: best.keras stays
    np.testing.assert_array_equal(keras.models.load_model(path, compile=False).get_weights()[0],
                                  saved[0])
    assert best.get_state() == {"best": 0.5}

    def dies(partial, *args, **kwargs):
        with open(partial, "wb") as f:
            f.write(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(best.model, "save", dies)
    with pytest.raises(OSError, match="disk full"):
        best.on_epoch_end(2, {"val_accuracy": 0.9})
    # The interrupted save left its temporary file; best.keras is the previous model, whole.
    np.testing.assert_array_equal(keras.models.load_model(path, compile=False).get_weights()[0],
                                  saved[0])
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "best.partial.keras"]


# === Preemption: every process checks the stop flag at the same steps ===


class _Group:
    """A collective among threads standing for ranks: `any_process` of every rank meets at a
    barrier, so ranks calling it at different steps would pair the wrong calls (or time out)."""

    def __init__(self, size):
        self.barrier = threading.Barrier(size, timeout=20)
        self.flags = [False] * size
        self.calls = [[] for _ in range(size)]


class _Rank:
    kind = "horovod"

    def __init__(self, group, rank, ckpt):
        self.group, self.rank, self.ckpt = group, rank, ckpt

    def any_process(self, flag):
        self.group.calls[self.rank].append(self.ckpt.step)
        self.group.flags[self.rank] = flag
        self.group.barrier.wait()
        result = any(self.group.flags)
        self.group.barrier.wait()
        return result


class _Checkpoint:
    def __init__(self, every_steps):
        self.every_steps = every_steps
        self.step = 0
        self.saves = []

    def save(self):
        self.saves.append(self.step)


def test_preemption_check_period():
    assert preemption.check_period("one_device", 2) == 1  # the flag is local: every step
    assert preemption.check_period("mirrored", 0) == 1
    assert preemption.check_period("horovod", 0) == preemption.CHECK_EVERY_STEPS == 20
    assert preemption.check_period("multi_worker", 1000) == 20
    assert preemption.check_period("horovod", 2) == 2  # no later than the checkpoint period


def test_every_rank_checks_at_the_same_steps_and_stops_at_the_same_step():
    group = _Group(2)
    stops = [None, None]
    checkpoints = [_Checkpoint(every_steps=0), _Checkpoint(every_steps=0)]

    def rank(number, signal_at):
        ckpt = checkpoints[number]
        guard = preemption.PreemptionGuard(_Rank(group, number, ckpt), ckpt, check_every=5)
        for step in range(30):
            ckpt.step = step
            if step == signal_at:
                guard.received = "SIGTERM"
            try:
                guard.on_train_batch_begin(step)
            except preemption.Preempted as stopped:
                stops[number] = stopped.step
                return

    # Rank 0 gets the signal during step 7, rank 1 never does.
    threads = [threading.Thread(target=rank, args=(0, 7)),
               threading.Thread(target=rank, args=(1, None))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert stops == [10, 10]
    # One collective every 5 steps, plus the barrier after the chief's save.
    assert group.calls == [[0, 5, 10, 10], [0, 5, 10, 10]]
    assert [c.saves for c in checkpoints] == [[10], [10]]


def test_one_process_checks_its_flag_at_every_step():
    ckpt = _Checkpoint(every_steps=20)

    class _OneDevice:
        kind = "one_device"

        def any_process(self, flag):
            return flag

    guard = preemption.PreemptionGuard(_OneDevice(), ckpt)
    assert guard.check_every == 1
    ckpt.step = 3
    guard.on_train_batch_begin(0)
    guard.received = "SIGUSR1"
    ckpt.step = 4
    with pytest.raises(preemption.Preempted, match="stopped by SIGUSR1 at step 4"):
        guard.on_train_batch_begin(1)
    assert ckpt.saves == [4]
