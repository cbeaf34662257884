"""Tests for models/: registry, shapes, parameter counts, configs, mixed precision, saving,
the keras-only import rule and other backends. CTC helpers are in test_models_ctc.py."""
import ast
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import models  # noqa: E402
from models import complexity  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"

# Small builds of each architecture, used wherever the test does not need a full-size preset.
TINY_CASES = {
    "lenet": dict(name="lenet", num_classes=10, input_shape=(28, 28, 1)),
    "lenet_regularised": dict(
        name="lenet", num_classes=10, input_shape=(28, 28, 1), l2=1e-4, dropout=0.5
    ),
    "hccr_resnet_tiny": dict(name="hccr_resnet_tiny", num_classes=20, input_shape=(32, 32, 1)),
    "crnn_tiny": dict(name="crnn_tiny", num_classes=11, input_shape=(32, None, 1)),
    "crnn_unrolled_small": dict(
        name="crnn_tiny",
        num_classes=11,
        input_shape=(32, 64, 1),
        lstm_units=16,
        unroll=True,
    ),
}


def _build(case):
    kwargs = dict(TINY_CASES[case])
    return models.build_model(kwargs.pop("name"), **kwargs)


def _batch_for(case, batch=2, width=48, seed=0):
    height, fixed_width, channels = TINY_CASES[case]["input_shape"]
    width = fixed_width or width
    return np.random.default_rng(seed).random((batch, height, width, channels), dtype=np.float32)


@pytest.fixture
def dtype_policy():
    """Sets a global dtype policy for one test and always restores float32."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


# === Registry and validation ===


def test_registry_lists_every_required_preset():
    expected = {
        "lenet",
        "hccr_resnet_tiny",
        "hccr_resnet_compact",
        "hccr_resnet_base",
        "crnn_tiny",
        "crnn",
    }
    assert expected <= set(models.available_models())
    assert models.available_models()[0] == "lenet"


def test_unknown_model_name_raises_with_the_name():
    with pytest.raises(ValueError, match="Received: name='resnet999'"):
        models.build_model("resnet999", num_classes=10, input_shape=(32, 32, 1))


@pytest.mark.parametrize(
    "name, kwargs, fragment",
    [
        ("lenet", dict(num_classes=1, input_shape=(28, 28, 1)), "num_classes=1"),
        ("lenet", dict(num_classes=10, input_shape=(28, 28)), "input_shape=(28, 28)"),
        ("lenet", dict(num_classes=10, input_shape=(28, 28, 1), dropout=1.0), "dropout=1.0"),
        ("hccr_resnet_tiny", dict(num_classes=10, input_shape=(4, 4, 1)), "at least 8x8"),
        (
            "hccr_resnet_tiny",
            dict(num_classes=10, input_shape=(32, 32, 1), stage_blocks=(1, 1)),
            "stage_blocks=(1, 1)",
        ),
        (
            "hccr_resnet_tiny",
            dict(num_classes=10, input_shape=(32, 32, 1), separable_from_stage=7),
            "separable_from_stage=7",
        ),
        ("hccr_resnet_tiny", dict(num_classes=10, input_shape=(32, None, 1)), "input_shape"),
        ("crnn_tiny", dict(num_classes=10, input_shape=(40, None, 1)), "multiple of 16"),
        (
            "crnn_tiny",
            dict(num_classes=10, input_shape=(32, None, 1), unroll=True),
            "fixed width",
        ),
        (
            "crnn_tiny",
            dict(num_classes=10, input_shape=(32, None, 1), lstm_units=0),
            "lstm_units=0",
        ),
        (
            "hccr_resnet_tiny",
            dict(num_classes=10, input_shape=(32, 32, 1), bn_momentum=1.0),
            "bn_momentum=1.0",
        ),
        # LeNet has no BatchNorm: an argument it would ignore is refused.
        (
            "lenet",
            dict(num_classes=10, input_shape=(28, 28, 1), bn_momentum=0.9),
            "takes no argument 'bn_momentum'; its arguments: conv_filters,",
        ),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(name, kwargs, fragment):
    with pytest.raises(ValueError, match="Received:") as error:
        models.build_model(name, **kwargs)
    assert fragment in str(error.value)


def _batchnorm_layers(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += _batchnorm_layers(layer)
    return found


@pytest.mark.parametrize("case", ["hccr_resnet_tiny", "crnn_tiny"])
def test_bn_momentum_reaches_every_batchnorm_layer(case):
    kwargs = dict(TINY_CASES[case])
    name = kwargs.pop("name")
    assert "bn_momentum" in models.model_arguments(name)
    default = _batchnorm_layers(models.build_model(name, **kwargs))
    assert default and {layer.momentum for layer in default} == {0.99}  # Keras' default
    tuned = _batchnorm_layers(models.build_model(name, bn_momentum=0.9, **kwargs))
    assert [layer.name for layer in tuned] == [layer.name for layer in default]
    assert {layer.momentum for layer in tuned} == {0.9}
    assert "bn_momentum" not in models.model_arguments("lenet")


# === Shapes and parameter counts ===


def test_lenet_parameter_count_matches_the_architecture():
    model = models.build_model("lenet", num_classes=10, input_shape=(28, 28, 1))
    conv1 = 5 * 5 * 1 * 32 + 32
    conv2 = 5 * 5 * 32 * 64 + 64
    dense = 7 * 7 * 64 * 128 + 128  # two 2x2 poolings of a "same"-padded 28x28 map
    logits = 128 * 10 + 10
    assert model.count_params() == conv1 + conv2 + dense + logits == 454_922


@pytest.mark.parametrize(
    "case, params, output_shape",
    [
        ("lenet", 454_922, (2, 10)),
        ("lenet_regularised", 454_922, (2, 10)),
        ("hccr_resnet_tiny", 10_610, (2, 20)),
        ("crnn_tiny", 78_516, (2, 12, 12)),  # width 48 -> 12 steps, 11 characters + blank
        ("crnn_unrolled_small", 49_204, (2, 16, 12)),
    ],
)
def test_tiny_models_parameter_counts_and_output_shapes(case, params, output_shape):
    model = _build(case)
    assert model.count_params() == params
    logits = model(_batch_for(case), training=False)
    assert tuple(logits.shape) == output_shape
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


def test_full_presets_parameter_counts_and_size_goals():
    compact = models.build_model("hccr_resnet_compact", num_classes=3755, input_shape=(64, 64, 1))
    base = models.build_model("hccr_resnet_base", num_classes=3755, input_shape=(64, 64, 1))
    crnn = models.build_model("crnn", num_classes=3855, input_shape=(64, None, 1))
    assert compact.count_params() == 2_701_907
    assert base.count_params() == 9_998_395
    assert crnn.count_params() == 10_683_472
    # Size goals: the compact model must fit a ~3 MB INT8 file with its 3755-way head.
    assert compact.count_params() <= 3_000_000
    assert 8_000_000 <= base.count_params() <= 12_000_000
    assert compact.output.shape == (None, 3755) and base.output.shape == (None, 3755)
    assert crnn.output.shape == (None, None, 3856)


def test_classifier_parameters_do_not_depend_on_the_image_size_but_on_the_classes():
    small = models.build_model("hccr_resnet_tiny", num_classes=20, input_shape=(32, 32, 1))
    large = models.build_model("hccr_resnet_tiny", num_classes=20, input_shape=(64, 64, 1))
    more = models.build_model("hccr_resnet_tiny", num_classes=21, input_shape=(32, 32, 1))
    assert small.count_params() == large.count_params()
    # One more class adds one row of the classifier: embedding_dim weights + 1 bias.
    assert more.count_params() - small.count_params() == 32 + 1


@pytest.mark.parametrize("width", [4, 37, 64, 101])
def test_crnn_time_steps_match_the_model_output(width):
    model = _build("crnn_tiny")
    logits = model(np.zeros((1, 32, width, 1), np.float32), training=False)
    assert logits.shape[1] == models.crnn_time_steps(width) == width // models.CRNN_WIDTH_DOWNSAMPLE


def test_unrolled_crnn_has_the_same_weights_as_the_rolled_one():
    rolled = models.build_model(
        "crnn_tiny", num_classes=11, input_shape=(32, None, 1), lstm_units=16
    )
    unrolled = _build("crnn_unrolled_small")
    assert [w.shape for w in rolled.weights] == [w.shape for w in unrolled.weights]
    unrolled.set_weights(rolled.get_weights())
    images = _batch_for("crnn_unrolled_small")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(rolled(images, training=False)),
        keras.ops.convert_to_numpy(unrolled(images, training=False)),
        atol=1e-5,
    )


def test_unrolled_crnn_traces_with_an_unknown_batch_size():
    # The export path traces the model with a dynamic batch; the unrolled LSTMs then still
    # need a static number of time steps from the height-collapsing layer.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("graph tracing for export is a TensorFlow-backend path")
    import tensorflow as tf

    model = _build("crnn_unrolled_small")
    serve = tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, 32, 64, 1), tf.float32)],
    )
    assert serve.get_concrete_function().structured_outputs.shape.as_list() == [None, 16, 12]


def test_one_training_step_updates_every_trainable_weight():
    model = _build("hccr_resnet_tiny")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images = _batch_for("hccr_resnet_tiny", batch=8)
    labels = np.arange(8) % 20
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    unchanged = [
        w.path
        for w, old, new in zip(model.trainable_weights, before, after, strict=True)
        if np.array_equal(old, new)
    ]
    assert unchanged == []


# === Config, mixed precision, saving ===


@pytest.mark.parametrize("case", ["lenet_regularised", "hccr_resnet_tiny", "crnn_tiny"])
def test_config_round_trip_gives_the_same_model(case):
    model = _build(case)
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    assert clone.name == model.name
    clone.set_weights(model.get_weights())
    images = _batch_for(case)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(images, training=False)),
        keras.ops.convert_to_numpy(model(images, training=False)),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "policy, compute_dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
@pytest.mark.parametrize("case", ["lenet", "hccr_resnet_tiny", "crnn_tiny"])
def test_logits_stay_float32_under_mixed_precision(case, policy, compute_dtype, dtype_policy):
    dtype_policy(policy)
    model = _build(case)
    # The body really runs in half precision; only the head is float32.
    conv_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.compute_dtype for layer in conv_layers} == {compute_dtype}
    logits = model(_batch_for(case), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


@pytest.mark.parametrize("case", list(TINY_CASES))
def test_keras_file_round_trip_in_safe_mode(case, tmp_path):
    model = _build(case)
    # Non-trivial BatchNorm statistics, so that a lost moving average would show.
    model(_batch_for(case, batch=4, seed=1), training=True)
    path = tmp_path / f"{case}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = _batch_for(case)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(images, training=False)),
        keras.ops.convert_to_numpy(model(images, training=False)),
    )
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)


# === Complexity table ===


def test_flops_of_lenet_match_a_hand_count():
    model = models.build_model("lenet", num_classes=10, input_shape=(28, 28, 1))
    conv1 = 2 * 28 * 28 * 32 * (5 * 5 * 1)
    conv2 = 2 * 14 * 14 * 64 * (5 * 5 * 32)
    dense = 2 * (7 * 7 * 64) * 128
    logits = 2 * 128 * 10
    assert complexity.model_flops(model) == conv1 + conv2 + dense + logits


def test_flops_of_a_bilstm_and_separable_conv_match_a_hand_count():
    images = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, padding="same")(images)
    sequence = keras.layers.Reshape((8, 32))(x)
    y = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))(sequence)
    model = keras.Model(images, y)
    separable = 2 * (8 * 8 * 3 * 9 + 8 * 8 * 3 * 4)
    bilstm = 2 * 8 * 2 * 4 * 5 * (32 + 5)
    assert complexity.model_flops(model) == separable + bilstm


def test_flops_need_a_fixed_width():
    with pytest.raises(ValueError, match="fixed input width"):
        complexity.model_flops(_build("crnn_tiny"))


def test_main_prints_a_row_per_preset(capsys):
    from models.__main__ import main

    main(["--num-classes", "20", "--image-size", "32", "--line-width", "64"])
    out = capsys.readouterr().out
    for name in models.available_models():
        assert f"\n{name} " in out
    lenet_row = next(line for line in out.splitlines() if line.startswith("lenet "))
    # lenet at 32x32 with 20 classes: conv 832 + 51,264, dense 8*8*64*128+128, head 128*20+20.
    assert "579,092" in lenet_row


# === The keras-only import rule and other backends ===


def _imported_roots(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            function_name = getattr(function, "attr", getattr(function, "id", ""))
            first = node.args[0]
            if function_name in {"import_module", "__import__"} and isinstance(
                first, ast.Constant
            ) and isinstance(first.value, str):
                yield first.value


def test_models_source_never_imports_tensorflow():
    sources = sorted(MODELS_DIR.glob("*.py"))
    assert len(sources) >= 5
    offenders = []
    for path in sources:
        for module in _imported_roots(ast.parse(path.read_text(), filename=str(path))):
            if module.split(".")[0] in {"tensorflow", "tf_keras"} or ".tensorflow" in module:
                offenders.append(f"{path.name}: {module}")
    assert offenders == []


_IMPORT_TRACKER = r"""
import builtins, json, os, sys, types
import keras  # the TensorFlow backend itself imports tensorflow: that is allowed
real_import = builtins.__import__
offenders = []
def tracking_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if importer.split(".")[0] == "models" and name.split(".")[0] == "tensorflow":
        offenders.append(importer + " -> " + name)
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = tracking_import
import numpy as np
import models
from models import complexity, ctc
model = models.build_model("crnn_tiny", num_classes=5, input_shape=(32, None, 1))
logits = model(np.zeros((1, 32, 16, 1), "float32"))
ctc.ctc_greedy_decode(logits, np.array([4]))
for module_name, module in list(sys.modules.items()):
    if module_name.split(".")[0] == "models":
        for value in vars(module).values():
            if isinstance(value, types.ModuleType) and value.__name__.startswith("tensorflow"):
                offenders.append(module_name + " holds " + value.__name__)
print("RESULT" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "models")
                            + ["OFFENDERS"] + offenders))
"""


def test_importing_and_running_models_imports_no_tensorflow_itself():
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORT_TRACKER],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.split("RESULT", 1)[1])
    loaded, offenders = result[: result.index("OFFENDERS")], result[result.index("OFFENDERS") + 1:]
    assert "models.crnn" in loaded and "models.ctc" in loaded
    assert offenders == []


_OTHER_BACKEND_RUN = r"""
import sys
import numpy as np
import keras
assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
import models
from models import ctc
for name, shape, classes in [("lenet", (28, 28, 1), 10), ("hccr_resnet_tiny", (32, 32, 1), 20)]:
    model = models.build_model(name, num_classes=classes, input_shape=shape)
    out = model(np.zeros((2,) + shape, "float32"))
    assert tuple(out.shape) == (2, classes), out.shape
model = models.build_model("crnn_tiny", num_classes=5, input_shape=(32, None, 1))
logits = model(np.zeros((2, 32, 40, 1), "float32"))
assert tuple(logits.shape) == (2, 10, 6), logits.shape
labels, label_length, logit_length = np.array([[1, 2], [3, 0]]), np.array([2, 1]), np.array([10, 8])
loss = keras.ops.convert_to_numpy(ctc.ctc_loss(labels, logits, label_length, logit_length))
assert loss.shape == (2,) and np.all(np.isfinite(loss)), loss
assert len(ctc.ctc_beam_decode(logits, np.array([10, 8]), beam_width=4)) == 2
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_build_and_run_on_another_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    completed = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND_RUN, backend],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
