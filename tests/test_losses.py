"""The trainer's classification loss: sparse labels with label smoothing, as Keras defines it."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from trainers.training import losses  # noqa: E402


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.2])
def test_label_smoothing_matches_keras_categorical_cross_entropy(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, (16, 21)).astype("float32")
    labels = rng.integers(0, 21, 16)
    ours = losses.SparseCrossEntropy(label_smoothing=smoothing)(labels, logits)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)(
        keras.utils.to_categorical(labels, 21), logits)
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-5)


def test_label_smoothing_survives_saving_with_the_model(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("adam", losses.SparseCrossEntropy(label_smoothing=0.2))
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert loaded.loss.label_smoothing == 0.2
