"""EMA of the weights (trainers/training/ema.py, `Config.ema_momentum`): the averages match a
hand computation, validation / best.keras / final.keras use them, the resumable checkpoint
keeps raw weights and averages apart, and a fit split in two trains like an unbroken one."""
import csv
import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from tests import tiny_data
from trainers.training import configs, ema, input_pipeline, train

MOMENTUM = 0.5  # large steps of the average, so a few training steps move it visibly


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _hand_ema(raw_steps: list[list[np.ndarray]], momentum: float) -> list[np.ndarray]:
    """Keras' rule: the first update copies the weights, then m * average + (1 - m) * w."""
    average = [w.copy() for w in raw_steps[0]]
    for weights in raw_steps[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    return average


class _Record(keras.callbacks.Callback):
    """The model's weights after every step, at every evaluation and at every epoch end."""

    def __init__(self):
        super().__init__()
        self.steps, self.at_test, self.at_epoch_end = [], [], []

    def _weights(self):
        return [keras.ops.convert_to_numpy(v).copy() for v in self.model.trainable_variables]

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self._weights())

    def on_test_begin(self, logs=None):
        self.at_test.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append(self._weights())


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, **ema.optimizer_kwargs(MOMENTUM)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _tiny_data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(12, 3)).astype("float32"), rng.integers(0, 2, 12)


def _close(a, b, atol=1e-6):
    return len(a) == len(b) and all(np.allclose(x, y, atol=atol) for x, y in zip(a, b))


def test_ema_momentum_is_validated():
    assert configs.Config(ema_momentum=0.999).validate().ema_momentum == 0.999
    for bad in (-0.1, 1.0, float("nan"), "0.9"):
        with pytest.raises(configs.ConfigError, match="ema_momentum"):
            dataclasses.replace(configs.Config(), ema_momentum=bad).validate()
    assert ema.optimizer_kwargs(0.0) == {}


def test_three_steps_evaluate_and_end_with_the_hand_computed_average():
    model = _tiny_model()
    x, y = _tiny_data()
    averaged, record_inside, record_after = ema.EMAWeights(), _Record(), _Record()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, validation_data=(x, y), verbose=0,
              callbacks=[averaged, record_inside, averaged.swap_back, record_after])
    assert len(record_after.steps) == 3
    expected = _hand_ema(record_after.steps, MOMENTUM)
    raw = record_after.steps[-1]
    assert not _close(expected, raw), "the average must differ from the raw weights"
    # Validation and the callbacks between EMAWeights and swap_back see the averages...
    assert _close(record_inside.at_test[0], expected)
    assert _close(record_inside.at_epoch_end[0], expected)
    # ...the ones after swap_back (the resumable checkpoint) the raw weights.
    assert _close(record_after.at_epoch_end[0], raw)
    # fit returns with the raw weights in the model and the averages in the optimizer.
    assert _close([keras.ops.convert_to_numpy(v) for v in model.trainable_variables], raw)
    assert _close(ema.averages(model), expected)
    ema.load_averages(model)
    assert _close([keras.ops.convert_to_numpy(v) for v in model.trainable_variables], expected)


def test_a_fit_split_in_two_trains_like_an_unbroken_one():
    x, y = _tiny_data()
    whole = _tiny_model()
    averaged = ema.EMAWeights()
    whole.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              callbacks=[averaged, averaged.swap_back])
    split = _tiny_model()
    averaged = ema.EMAWeights()
    for initial, end in ((0, 1), (1, 2)):
        split.fit(x, y, batch_size=4, initial_epoch=initial, epochs=end, shuffle=False,
                  verbose=0, callbacks=[averaged, averaged.swap_back])
    assert _close(split.get_weights(), whole.get_weights())
    assert _close(ema.averages(split), ema.averages(whole))


def test_optimizer_without_averages_is_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="use_ema"):
        ema.load_averages(model)


@pytest.fixture(scope="module")
def chars_dir(tmp_path_factory):
    return tiny_data.write_chars(tmp_path_factory.mktemp("chars"), num_classes=4, image_size=32,
                                 splits={"train": 64, "validation": 16})


def _weights_of(path):
    model = keras.models.load_model(path, compile=False)
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_trainer_validates_and_saves_the_averages(chars_dir, tmp_path):
    config = configs.override(configs.get_config("smoke"), [
        "epochs=2", "steps_per_epoch=3", "eval_steps=1", "checkpoint_every_steps=0",
        "precision=float32", f"ema_momentum={MOMENTUM}", "tensorboard=false",
        "learning_rate=0.03"])
    workdir = str(tmp_path / "run")
    record = _Record()
    metrics = train.train_and_evaluate(config, workdir, chars_dir, extra_callbacks=[record])
    assert len(record.steps) == 6
    per_epoch = [_hand_ema(record.steps[:3], MOMENTUM), _hand_ema(record.steps, MOMENTUM)]
    assert _close(_weights_of(os.path.join(workdir, "final.keras")), per_epoch[1], atol=1e-5)
    with open(os.path.join(workdir, "history.csv")) as f:
        val_losses = [float(row["val_loss"]) for row in csv.DictReader(f)]
    best_epoch = int(np.argmin(val_losses))
    assert _close(_weights_of(os.path.join(workdir, "best.keras")), per_epoch[best_epoch],
                  atol=1e-5)

    # The validation loss is that of the averaged model, not of the raw one.
    source = input_pipeline.open_preprocessed(chars_dir)
    images, labels = next(iter(input_pipeline.make_dataset(
        source, "validation", batch_size=16, training=False, take_batches=1)))
    final = keras.models.load_model(os.path.join(workdir, "final.keras"), compile=False)

    def val_loss(model):
        logits = model(images, training=False)
        return float(np.mean(keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)))
            + sum(float(keras.ops.convert_to_numpy(r)) for r in model.losses))  # L2
    assert val_loss(final) == pytest.approx(metrics["val_loss"], abs=1e-4)
    assert val_loss(final) == pytest.approx(val_losses[-1], abs=1e-4)

    # The resumable checkpoint: raw weights in the model, the averages in the optimizer.
    final.compile(optimizer=keras.optimizers.Adam(**ema.optimizer_kwargs(MOMENTUM)))
    final.optimizer.build(final.trainable_variables)
    final.load_weights(os.path.join(workdir, "checkpoints", "ckpt-00000006.weights.h5"))
    assert _close([keras.ops.convert_to_numpy(v) for v in final.trainable_variables],
                  record.steps[-1], atol=1e-6)
    assert _close(ema.averages(final), per_epoch[1], atol=1e-5)
    assert abs(val_loss(final) - metrics["val_loss"]) > 1e-4, "raw and averaged models agree"


def test_a_checkpoint_with_averages_and_one_without_do_not_mix(chars_dir):
    from trainers.training import checkpoint
    source = input_pipeline.open_preprocessed(chars_dir)
    plain = train.data_contract(configs.get_config("smoke"), source)
    averaged = train.data_contract(
        configs.override(configs.get_config("smoke"), ["ema_momentum=0.99"]), source)
    checkpoint.check_contract({"data_contract": plain}, dict(plain), "ckpts")
    # Keras would skip the optimizer state of another variable count with a warning only.
    for recorded, now in ((plain, averaged), (averaged, plain)):
        with pytest.raises(checkpoint.ContractError, match="ema"):
            checkpoint.check_contract({"data_contract": recorded}, now, "ckpts")
