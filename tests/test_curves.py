"""Tests for trainers/training/curves.py: curves.png from a history.csv, handmade and from a
real fit."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from trainers.training import curves

HANDMADE = """epoch,accuracy,learning_rate,loss,top5,val_accuracy,val_loss,val_top5
0,0.10,0.001,3.2,0.30,0.12,3.0,0.35
1,0.40,0.001,2.1,0.70,0.38,2.2,0.72
2,0.70,0.0005,1.0,0.90,0.66,1.3,0.91
"""


def _png_size(path):
    from PIL import Image
    with Image.open(path) as image:
        image.load()
        return image.size


def test_handmade_history_against_step(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(HANDMADE)
    out = str(tmp_path / "curves.png")
    drawn = curves.write_curves(str(history), out, steps_per_epoch=40)
    assert drawn["panels"] == ["loss", "accuracy", "learning_rate"]
    assert drawn["columns"]["loss"] == ["loss", "val_loss"]
    assert drawn["columns"]["accuracy"] == ["accuracy", "top5", "val_accuracy", "val_top5"]
    assert drawn["epochs"] == 3 and drawn["x_axis"] == "step"
    width, height = _png_size(out)
    assert width >= 1400 and height >= 300  # three panels side by side


def test_cer_panel_missing_values_and_epoch_axis(tmp_path):
    # A CRNN run: loss and CER; validation only on some epochs (empty cells).
    history = tmp_path / "history.csv"
    history.write_text("epoch,cer,learning_rate,loss,val_cer,val_loss\n"
                       "0,0.9,0.001,40.0,,\n1,0.5,0.001,20.0,0.6,22.0\n")
    drawn = curves.write_curves(str(history), str(tmp_path / "c.png"))
    assert drawn["panels"] == ["loss", "cer", "learning_rate"]
    assert drawn["x_axis"] == "epoch"
    epochs, columns = curves.read_history(str(history))
    assert epochs == [0, 1] and np.isnan(columns["val_cer"][0])


def test_bad_histories_fail_with_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv: no training history"):
        curves.write_curves(str(tmp_path / "missing.csv"), str(tmp_path / "x.png"))
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss\n")
    with pytest.raises(ValueError, match="empty.csv: no epochs"):
        curves.write_curves(str(empty), str(tmp_path / "x.png"))
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,loss\n0,1.0\n1,oops\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: column 'loss' .*'oops'"):
        curves.write_curves(str(bad), str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_history_written_by_a_real_fit(tmp_path):
    """The trainer's own HistoryCSV and LogLearningRate callbacks on a short model.fit."""
    import keras

    from trainers.training import callbacks as callbacks_lib
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    history = str(tmp_path / "history.csv")
    model.fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0,
              callbacks=[callbacks_lib.LogLearningRate(), callbacks_lib.HistoryCSV(history)])
    drawn = curves.write_curves(history, str(tmp_path / "curves.png"), steps_per_epoch=3)
    assert drawn["panels"] == ["loss", "accuracy", "learning_rate"]
    assert drawn["columns"]["accuracy"] == ["accuracy", "val_accuracy"]
    assert drawn["epochs"] == 3
    assert os.path.getsize(tmp_path / "curves.png") > 10_000
