"""mixup (`Config.mixup_alpha`): the blended batches, the loss and metrics on their targets,
the config rule, and a real training run with it."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tests import tiny_data  # noqa: E402
from trainers.training import configs, input_pipeline, losses, train  # noqa: E402


def _batches(n=8, size=6, seed=0):
    rng = np.random.default_rng(seed)
    batch = {"image": rng.random((n, size, size, 1), dtype=np.float32),
             "label": np.arange(n, dtype=np.int32)}
    return batch, tf.data.Dataset.from_tensors(batch).repeat(3)


def test_each_image_is_blended_with_its_neighbour_and_its_own_label_dominates():
    batch, batches = _batches()
    for mixed in input_pipeline.mixup_batches(batches, alpha=0.4, seed=1):
        weight = mixed["mix_weight"].numpy()
        assert weight.shape == (8,) and np.all(weight >= 0.5) and np.all(weight <= 1.0)
        assert not np.allclose(weight, 1.0)  # alpha 0.4 blends visibly
        partner = np.roll(batch["image"], 1, axis=0)
        expected = (weight[:, None, None, None] * batch["image"]
                    + (1 - weight[:, None, None, None]) * partner)
        np.testing.assert_allclose(mixed["image"].numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(mixed["label"].numpy(), batch["label"])
        np.testing.assert_array_equal(mixed["mix_label"].numpy(), np.roll(batch["label"], 1))
        x, y = input_pipeline.to_keras(mixed)
        assert y.shape == (8, 3) and y.dtype == tf.float32
        np.testing.assert_array_equal(y[:, 0], batch["label"])
        np.testing.assert_allclose(y[:, 2], weight)


def test_mixup_weights_are_drawn_anew_for_every_batch():
    _, batches = _batches()
    weights = [b["mix_weight"].numpy() for b in input_pipeline.mixup_batches(batches, 0.4, 3)]
    assert len(weights) == 3
    assert not np.allclose(weights[0], weights[1]) and not np.allclose(weights[1], weights[2])


def test_loss_on_mixup_targets_weights_the_two_labels():
    logits = tf.constant(np.random.default_rng(0).normal(size=(4, 5)), tf.float32)
    labels, partners = np.array([0, 1, 2, 3]), np.array([4, 0, 1, 2])
    weight = np.array([1.0, 0.8, 0.6, 0.5], np.float32)
    mixed = tf.constant(np.stack([labels, partners, weight], axis=1), tf.float32)
    for smoothing in (0.0, 0.2):
        loss = losses.SparseCrossEntropy(label_smoothing=smoothing, reduction=None)
        first = loss(tf.constant(labels), logits).numpy()
        second = loss(tf.constant(partners), logits).numpy()
        np.testing.assert_allclose(loss(mixed, logits).numpy(),
                                   weight * first + (1 - weight) * second, rtol=1e-5)
    # integer labels of shape (batch, 1) are not mistaken for mixup targets
    plain = losses.SparseCrossEntropy(reduction=None)
    np.testing.assert_allclose(plain(tf.constant(labels[:, None]), logits).numpy(),
                               plain(tf.constant(labels), logits).numpy())


def test_metrics_score_a_mixup_target_against_the_images_own_label():
    logits = tf.constant([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    mixed = tf.constant([[0, 1, 0.7], [1, 2, 0.9], [0, 2, 0.6], [1, 0, 0.5]], tf.float32)
    accuracy = losses.MixupSparseAccuracy()
    accuracy.update_state(mixed, logits)
    assert float(accuracy.result()) == pytest.approx(0.5)  # rows 0 and 1 right
    plain = losses.MixupSparseAccuracy()
    plain.update_state(tf.constant([0, 1, 2, 1]), logits)
    assert float(plain.result()) == pytest.approx(0.75)
    top2 = losses.MixupSparseTopKAccuracy(k=2)
    top2.update_state(mixed, logits)
    assert 0.5 <= float(top2.result()) <= 1.0


def test_mixup_alpha_is_checked():
    with pytest.raises(configs.ConfigError, match="mixup_alpha=-0.1"):
        configs.override(configs.get_config("smoke"), ["mixup_alpha=-0.1"]).validate()


def test_mixup_of_text_lines_is_refused(tmp_path):
    lines = tiny_data.write_lines(tmp_path / "lines")
    source = input_pipeline.open_preprocessed(str(lines))
    with pytest.raises(ValueError, match="mixup blends character images"):
        input_pipeline.make_dataset(source, "train", batch_size=2, training=True,
                                    mixup_alpha=0.4)


def test_a_training_run_with_mixup(tmp_path):
    data = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32,
                                 splits={"train": 64, "validation": 16})
    config = configs.override(configs.get_config("smoke"), [
        "epochs=1", "steps_per_epoch=3", "eval_steps=1", "precision=float32",
        "mixup_alpha=0.4"])
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"), data)
    assert metrics["step"] == 3
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["val_loss"])
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["val_accuracy"] <= 1.0
