"""`hccr-train --init-from` (trainers/training/init_from.py): the head matched by character
across permuted and overlapping charsets, the CRNN's blank, every other layer copied, the
refusals, and a run started from a one-epoch run through hccr-train (resume wins)."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

import models
from beam_preprocess.contract.charset import Charset
from tests import tiny_data
from trainers.training import init_from

CHARS = tiny_data.CHARS


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _build(name, num_classes, seed, input_shape=(32, 32, 1), **overrides):
    keras.utils.set_random_seed(seed)
    return models.build_model(name, num_classes=num_classes, input_shape=input_shape,
                              **overrides)


def _randomize(model, seed):
    """Every weight random (BatchNorm statistics and biases too), so a copy is visible."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])


def test_head_is_matched_by_character_across_permuted_overlapping_charsets():
    source_charset = Charset(list(CHARS[:4]))  # a b c d
    charset = Charset([CHARS[3], CHARS[10], CHARS[1], CHARS[11], CHARS[0]])  # d x b y a
    source = _build("hccr_resnet_tiny", 4, seed=1)
    _randomize(source, 1)
    model = _build("hccr_resnet_tiny", 5, seed=2)
    fresh_kernel, fresh_bias = model.get_layer("logits").get_weights()

    result = init_from.transfer(model, charset, source, source_charset)

    assert (result.classes, result.classes_matched, result.source_only) == (5, 3, 1)
    assert result.describe().startswith(f"{result.layers_copied} layers copied, head: 3 of 5 "
                                        f"classes matched, 2 new")
    kernel, bias = model.get_layer("logits").get_weights()
    source_kernel, source_bias = source.get_layer("logits").get_weights()
    for column, source_column in ((0, 3), (2, 1), (4, 0)):  # d, b, a
        np.testing.assert_array_equal(kernel[:, column], source_kernel[:, source_column])
        assert bias[column] == source_bias[source_column]
    for column in (1, 3):  # x, y: new characters keep the fresh initialisation
        np.testing.assert_array_equal(kernel[:, column], fresh_kernel[:, column])
        assert bias[column] == fresh_bias[column]
    copied = 0
    for layer in model.layers:
        if layer.weights and layer.name != "logits":
            for ours, theirs in zip(layer.get_weights(),
                                    source.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(ours, theirs)
            copied += 1
    assert copied == result.layers_copied > 10


def test_crnn_head_keeps_the_blank_and_shifts_characters_by_one():
    source_charset = Charset(list(CHARS[:3]))  # a b c
    charset = Charset([CHARS[2], CHARS[0], CHARS[20]])  # c a z
    source = _build("crnn_tiny", 3, seed=1, input_shape=(32, None, 1))
    _randomize(source, 3)
    model = _build("crnn_tiny", 3, seed=2, input_shape=(32, None, 1))
    fresh_kernel, _ = model.get_layer("logits").get_weights()

    result = init_from.transfer(model, charset, source, source_charset)

    assert (result.classes_matched, result.classes) == (2, 3)
    kernel, bias = model.get_layer("logits").get_weights()
    source_kernel, source_bias = source.get_layer("logits").get_weights()
    for column, source_column in ((0, 0), (1, 3), (2, 1)):  # blank, c, a
        np.testing.assert_array_equal(kernel[:, column], source_kernel[:, source_column])
        assert bias[column] == source_bias[source_column]
    np.testing.assert_array_equal(kernel[:, 3], fresh_kernel[:, 3])  # z is new


@pytest.mark.parametrize("source_args, match", [
    (("hccr_resnet_tiny", 4, dict(stage_filters=(8, 16, 48))), "has weights"),
    (("lenet", 4, {}), "only here"),
    (("hccr_resnet_tiny", 4, dict(embedding_dim=16)), "has weights"),
])
def test_another_architecture_is_refused_and_nothing_is_copied(source_args, match):
    name, classes, overrides = source_args
    source = _build(name, classes, seed=1, **overrides)
    model = _build("hccr_resnet_tiny", 4, seed=2)
    before = model.get_weights()
    charset = Charset(list(CHARS[:4]))
    with pytest.raises(init_from.InitFromError, match=match) as error:
        init_from.transfer(model, charset, source, charset, where="--init-from runs/x")
    assert "\n" not in str(error.value) and "runs/x" in str(error.value)
    for ours, kept in zip(model.get_weights(), before):
        np.testing.assert_array_equal(ours, kept)


def test_classifier_from_crnn_and_wrong_charsets_are_refused():
    charset = Charset(list(CHARS[:3]))
    crnn = _build("crnn_tiny", 3, seed=1, input_shape=(32, None, 1))
    model = _build("hccr_resnet_tiny", 3, seed=2)
    with pytest.raises(init_from.InitFromError, match="source is a CRNN"):
        init_from.transfer(model, charset, crnn, charset)
    with pytest.raises(init_from.InitFromError, match="3 classes in layer 'logits' but its "
                                                      "charset has 4"):
        init_from.transfer(model, charset, _build("hccr_resnet_tiny", 3, seed=1),
                           Charset(list(CHARS[:4])))


def test_locate_names_what_is_missing(tmp_path):
    with pytest.raises(init_from.InitFromError, match="no such file or directory"):
        init_from.locate(str(tmp_path / "nothing"))
    with pytest.raises(init_from.InitFromError, match="without best.keras or final.keras"):
        init_from.locate(str(tmp_path))
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(init_from.InitFromError, match="neither a training workdir nor"):
        init_from.locate(str(tmp_path / "model.h5"))
    model_path = tmp_path / "final.keras"
    model_path.write_bytes(b"")
    with pytest.raises(init_from.InitFromError, match="no .*charset.txt next to"):
        init_from.locate(str(model_path))
    (tmp_path / "charset.txt").write_text("a\n", encoding="utf-8")
    assert init_from.locate(str(model_path)) == (str(model_path), str(tmp_path / "charset.txt"))
    (tmp_path / "best.keras").write_bytes(b"")  # a workdir: its best model first
    assert init_from.locate(str(tmp_path))[0] == str(tmp_path / "best.keras")


class _HeadAtStart(keras.callbacks.Callback):
    """The weights the run starts training from."""

    def on_train_begin(self, logs=None):
        self.weights = {layer.name: [np.array(w) for w in layer.get_weights()]
                        for layer in self.model.layers if layer.weights}


def test_hccr_train_starts_from_a_one_epoch_run_and_resume_wins(tmp_path, capfd):
    from trainers.training import main, train
    pre_data = tiny_data.write_chars(tmp_path / "pre", num_classes=4, image_size=32)
    data = tiny_data.write_chars(tmp_path / "new", num_classes=6, image_size=32, seed=1)
    run_args = ["--config", "smoke", "--precision", "float32", "--set", "epochs=1",
                "--set", "steps_per_epoch=2", "--set", "eval_steps=1", "--set",
                "tensorboard=false"]
    pre = str(tmp_path / "runs" / "pre")
    assert main.main([*run_args, "--data", pre_data, "--workdir", pre]) == 0

    workdir = str(tmp_path / "runs" / "new")
    config = main.effective_config(main.parse_args(
        [*run_args, "--data", data, "--workdir", workdir, "--init-from", pre]))
    assert config.init_from == pre
    start = _HeadAtStart()
    capfd.readouterr()
    train.train_and_evaluate(config, workdir, data, extra_callbacks=[start])
    log = capfd.readouterr().err
    source = keras.models.load_model(os.path.join(pre, "best.keras"), compile=False)
    assert (f"init-from {os.path.join(pre, 'best.keras')}: {len(start.weights) - 1} layers "
            f"copied, head: 4 of 6 classes matched, 2 new") in log
    source_kernel, source_bias = source.get_layer("logits").get_weights()
    kernel, bias = start.weights["logits"]
    np.testing.assert_array_equal(kernel[:, :4], source_kernel)  # CHARS[:4] in both, in order
    np.testing.assert_array_equal(bias[:4], source_bias)
    np.testing.assert_array_equal(bias[4:], 0.0)  # new classes: Dense's fresh zero bias
    np.testing.assert_array_equal(start.weights["stem_conv"][0],
                                  source.get_layer("stem_conv").get_weights()[0])

    # A rerun resumes from the new run's own checkpoint and says it ignores --init-from.
    metrics = train.train_and_evaluate(config, workdir, data)
    assert metrics["resumed_from_step"] == 2
    assert f"--init-from {pre} ignored: resuming from this workdir's checkpoint" in \
        capfd.readouterr().err

    # A missing source: one line, exit status 2.
    assert main.main([*run_args, "--data", data, "--workdir", str(tmp_path / "runs" / "x"),
                      "--init-from", str(tmp_path / "runs" / "nope")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == (f"hccr-train: error: --init-from {tmp_path / 'runs' / 'nope'}: no such "
                       f"file or directory")
    assert not (tmp_path / "runs" / "x" / "config.json").exists()  # refused before any write
