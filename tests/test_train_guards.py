"""Training refuses to run wrong: no training on nothing, missing splits named, a resume on
other data refused (and --restart explicit), replicas compared weight by weight."""
import json
import os
import shutil
import types

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from beam_preprocess.contract import metadata
from beam_preprocess.contract.charset import Charset
from tests import tiny_data
from trainers.training import checkpoint as checkpoint_lib
from trainers.training import configs, input_pipeline, main, train


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _config(**changes):
    changes = {"epochs": 1, "steps_per_epoch": 1, "eval_steps": 1, "precision": "float32",
               **changes}
    return configs.override(configs.get_config("smoke"),
                            [f"{k}={v}" for k, v in changes.items()])


@pytest.mark.parametrize("splits, message", [
    ({"train": 0, "validation": 8}, "split 'train' (train_split) has 0 examples: nothing to "
                                    "train on"),
    ({"train": 16, "validation": 0}, "split 'validation' (eval_split) has 0 examples"),
])
def test_an_empty_split_is_refused_and_nothing_is_written(tmp_path, splits, message):
    data = tiny_data.write_chars(tmp_path / "data", splits=splits, num_shards=1)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train.train_and_evaluate(_config(), str(workdir), data)
    assert not workdir.exists()


@pytest.mark.parametrize("changes, message", [
    ({"model": "lenet", "bn_momentum": 0.9},
     "invalid config: bn_momentum sets bn_momentum=0.9, which model 'lenet' does not take; "
     "its arguments: conv_filters, "),
    ({"model_overrides": '{"stem_filter": 8}'},
     "invalid config: model_overrides sets stem_filter=8, which model 'hccr_resnet_tiny' "
     "does not take; its arguments: stem_filters, "),
])
def test_a_model_argument_the_model_does_not_take_is_refused(tmp_path, changes, message):
    data = tiny_data.write_chars(tmp_path / "data", splits={"train": 16, "validation": 8},
                                 num_shards=1)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError) as caught:
        train.train_and_evaluate(_config(**changes), str(workdir), data)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert not workdir.exists()


def test_the_config_bn_momentum_is_every_batchnorm_layer_momentum():
    source = types.SimpleNamespace(task="chars", num_classes=5, image_shape=(32, 32, 1),
                                   image_height=32)
    model = train.create_model(_config(bn_momentum=0.9), source)
    layers = train.batchnorm_layers(model)
    assert len(layers) == 11 and {layer.momentum for layer in layers} == {0.9}
    default = train.create_model(_config(), source)
    assert {layer.momentum for layer in train.batchnorm_layers(default)} == {0.99}
    # Nested models are searched too.
    outer = keras.Sequential([keras.Input((32, 32, 1)), model])
    assert train.batchnorm_layers(outer) == layers


def test_a_missing_split_is_one_line_naming_the_splits_that_exist(tmp_path, capsys):
    data = tiny_data.write_chars(tmp_path / "data", splits={"train": 16, "validation": 8})
    with pytest.raises(input_pipeline.MissingSplitError) as caught:
        train.train_and_evaluate(_config(eval_split="test"), str(tmp_path / "run"), data)
    assert str(caught.value) == f"no split 'test' in {data}; it has 'train', 'validation'"
    workdir = tmp_path / "cli"
    assert main.main(["--config", "smoke", "--data", data, "--workdir", str(workdir),
                      "--set", "eval_split=test"]) == 2
    err = capsys.readouterr().err
    assert err == f"hccr-train: error: no split 'test' in {data}; it has 'train', 'validation'\n"
    assert not workdir.exists()


def test_digits_validation_is_held_out_of_the_training_set_not_the_test_set(tmp_path):
    images = np.zeros((10, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(10)  # each training image is distinct
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=np.arange(10),
             x_test=np.full((3, 28, 28), 200, np.uint8), y_test=np.arange(3))
    arrays = input_pipeline.load_digits_arrays(str(tmp_path / "mnist.npz"))
    assert len(arrays["validation"][1]) == 2 and len(arrays["train"][1]) == 8
    assert len(arrays["test"][1]) == 3
    held_out = {int(255 - x[0, 0]) for x in arrays["validation"][0]}
    trained = {int(255 - x[0, 0]) for x in arrays["train"][0]}
    assert held_out.isdisjoint(trained) and held_out | trained == set(range(10))


def _permute_charset(source, target):
    """A copy of `source` whose charset is reversed (metadata.json updated to match)."""
    shutil.copytree(source, target)
    charset = Charset.load(os.path.join(target, "charset.txt"))
    permuted = Charset(list(reversed(charset.chars)))
    permuted.save(os.path.join(target, "charset.txt"))
    with open(os.path.join(target, "metadata.json"), encoding="utf-8") as f:
        raw = json.load(f)
    raw["charset_sha256"] = permuted.sha256()
    raw.pop("schema_version")
    metadata.write(str(target), raw)
    return str(target), charset, permuted


@pytest.mark.slow
def test_resuming_on_other_data_is_refused_and_restart_is_explicit(tmp_path, capsys):
    data = tiny_data.write_chars(tmp_path / "data", splits={"train": 32, "validation": 8})
    workdir = tmp_path / "run"
    first = train.train_and_evaluate(_config(), str(workdir), data)
    assert first["step"] == 1
    permuted_dir, charset, permuted = _permute_charset(data, tmp_path / "permuted")

    with pytest.raises(checkpoint_lib.ContractError) as caught:
        train.train_and_evaluate(_config(epochs=2), str(workdir), permuted_dir)
    message = str(caught.value)
    assert (f"charset_sha256 {charset.sha256()!r} in the checkpoint, {permuted.sha256()!r} now"
            in message)
    # Refused before writing: the workdir still describes the data its model was trained on.
    assert Charset.load(str(workdir / "charset.txt")) == charset
    # A different model is refused the same way, through the CLI: one line, exit 2.
    capsys.readouterr()
    assert main.main(["--config", "smoke", "--data", data, "--workdir", str(workdir),
                      "--set", "model=lenet", "--precision", "float32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model 'hccr_resnet_tiny' in the checkpoint, 'lenet' now" \
        in err and "--restart" in err

    again = train.train_and_evaluate(_config(epochs=2), str(workdir), permuted_dir,
                                     restart=True)
    assert again["resumed_from_step"] == 0 and again["step"] == 2
    assert Charset.load(str(workdir / "charset.txt")) == permuted
    state = checkpoint_lib.read_state(str(workdir / "checkpoints"))
    assert state["data_contract"]["charset_sha256"] == permuted.sha256()


def test_replicas_are_compared_variable_by_variable():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()])
    paths = [v.path for v in model.weights]
    same = {p: "x" for p in paths}
    stats = dict(same, **{p: "y" for p in paths if "moving" in p})
    assert train.replicas_in_sync(model, [same, same]) == {
        "trainable_in_sync": True, "statistics_in_sync": True, "differing": []}
    result = train.replicas_in_sync(model, [same, stats])
    assert result["trainable_in_sync"] and not result["statistics_in_sync"]
    assert result["differing"] == sorted(p for p in paths if "moving" in p)


def test_hwdb11_validation_is_carved_from_the_training_writers_by_writer_id():
    from beam_preprocess.job import splits
    paths = [f"HWDB1.1trn_gnt/{w}-c.gnt" for w in range(1001, 1241)] + \
            [f"HWDB1.1tst_gnt/{w}-c.gnt" for w in range(1241, 1301)]
    assigned, rule = splits.assign_splits(paths, "casia", 0.1)
    by_split = {}
    for path, split in assigned.items():
        by_split.setdefault(split, set()).add(int(splits.writer_id(path)))
    assert by_split["test"] == set(range(1241, 1301))  # the test writers stay untouched
    assert by_split["validation"] and max(by_split["validation"]) <= 1240
    assert by_split["train"] | by_split["validation"] == set(range(1001, 1241))
    assert 10 <= len(by_split["validation"]) <= 40 and "validation fraction 0.1" in rule
    # The preset's documented command makes exactly that split, and selects on it.
    doc = configs.PRESETS["hwdb11"].__doc__
    assert "--split casia --validation-fraction 0.1" in doc
    assert configs.get_config("hwdb11").eval_split == "validation"
