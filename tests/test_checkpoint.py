"""Resumable checkpoints: atomic writes, falling back past an unreadable newest checkpoint,
one line naming the directory when none is intact, and the data contract."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from beam_preprocess import cli_errors
from trainers.training import checkpoint as checkpoint_lib

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
