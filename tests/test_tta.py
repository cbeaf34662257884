"""Test-time augmentation (trainers/serving/inference.py `TTARunner`, `hccr-eval --tta`,
`hccr-predict --tta`): the views, the averaging, and the two commands on every format."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from beam_preprocess.contract import imaging  # noqa: E402
from tests import test_eval_fixtures as fx  # noqa: E402
from trainers.serving import eval_cli, evaluation, inference, predict_cli  # noqa: E402


def _blob(size=16, top=5, left=6, height=4, width=3) -> np.ndarray:
    x = np.zeros((1, size, size, 1), np.float32)
    x[0, top:top + height, left:left + width, 0] = 1.0
    return x


def test_views_of_each_mode():
    assert inference.tta_views("off") == [("identity", None)]
    assert len(inference.tta_views("shift")) == 5
    assert len(inference.tta_views("scale")) == 3
    assert len(inference.tta_views("all")) == 7
    with pytest.raises(ValueError, match="unknown test-time augmentation 'flip'"):
        inference.tta_views("flip")


@pytest.mark.parametrize("dy,dx", [(1, 0), (-1, 0), (0, 1), (0, -1), (2, -3)])
def test_shift_moves_ink_and_brings_in_background(dy, dx):
    x = np.random.default_rng(0).random((2, 10, 12, 1), dtype=np.float32)
    shifted = inference.shift_images(x, dy, dx)
    assert shifted.shape == x.shape
    h, w = x.shape[1:3]
    for y in range(h):
        for col in range(w):
            sy, sx = y - dy, col - dx
            expected = x[:, sy, sx] if 0 <= sy < h and 0 <= sx < w else 0.0
            np.testing.assert_array_equal(shifted[:, y, col], expected)


def test_resize_matches_tensorflow_antialiased_bilinear():
    import tensorflow as tf
    x = np.random.default_rng(1).random((3, 48, 48, 1), dtype=np.float32)
    for size in (44, 52, 24):
        ours = np.einsum("ah,nhwc,bw->nabc", inference._resize_matrix(48, size), x,
                         inference._resize_matrix(48, size))
        theirs = tf.image.resize(x, (size, size), method="bilinear", antialias=True).numpy()
        np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_scale_keeps_the_centre_and_scales_the_ink():
    x = _blob(size=48, top=18, left=20, height=12, width=8)
    mass, centre = x.sum(), (23.5, 23.5)
    np.testing.assert_allclose(inference.scale_images(x, 1.0), x, atol=1e-6)
    for factor in (0.92, 1.08, 0.5):
        scaled = inference.scale_images(x, factor)
        assert scaled.shape == x.shape and scaled.min() >= 0
        # the blob is centred, so enlarging keeps all of it: its ink grows by factor squared
        # (up to rounding the new size to whole pixels)
        new = round(48 * factor) / 48
        assert scaled.sum() == pytest.approx(mass * new * new, rel=0.02)
        ys, xs = np.nonzero(scaled[0, ..., 0] > 0.01)
        weights = scaled[0, ys, xs, 0]
        cy, cx = np.average(ys, weights=weights), np.average(xs, weights=weights)
        assert abs(cy - centre[0]) < 0.6 and abs(cx - centre[1]) < 0.6


class _FakeClassifier(inference.Runner):
    """Logits that depend on where the ink is: a runner whose views disagree."""
    format, name, input_height, input_width = "fake", "fake", 16, 16

    def __init__(self, sequence=False):
        self.sequence = sequence
        self.calls = []

    def _run(self, x):
        self.calls.append(len(x))
        rows = (x[..., 0].sum(axis=2) * np.arange(x.shape[1])).sum(axis=1)
        cols = (x[..., 0].sum(axis=1) * np.arange(x.shape[2])).sum(axis=1)
        return np.stack([rows / 10, cols / 10, np.ones(len(x))], axis=1).astype(np.float32)


@pytest.mark.parametrize("mode", ["shift", "scale", "all"])
def test_tta_runner_averages_the_probabilities_of_the_views(mode):
    inner = _FakeClassifier()
    runner = inference.with_tta(inner, mode)
    x = np.concatenate([_blob(), _blob(top=2, left=9)])
    expected = np.mean([inference.softmax(inner._run(inference.view_images(x, view)))
                        for view in inference.tta_views(mode)], axis=0)
    inner.calls.clear()
    logits = runner.predict(x)
    np.testing.assert_allclose(inference.softmax(logits), expected, rtol=1e-5)
    assert inner.calls == [2] * len(inference.tta_views(mode))
    plain = inference.softmax(inner._run(x))
    assert not np.allclose(expected, plain)  # the views do change the answer here
    assert runner.describe()["tta_views"] == len(inference.tta_views(mode))


def test_tta_off_is_the_runner_itself_and_line_models_are_refused():
    inner = _FakeClassifier()
    assert inference.with_tta(inner, "off") is inner
    with pytest.raises(ValueError, match="CTC line model; test-time augmentation"):
        inference.with_tta(_FakeClassifier(sequence=True), "all")


def test_eval_with_tta_reports_it_and_off_matches_plain(tmp_path, capsys):
    plain = evaluation.evaluate(fx.chars_model(), fx.chars_data(), "test", progress=False)
    off = evaluation.evaluate(fx.chars_model(), fx.chars_data(), "test", progress=False,
                              tta="off")
    assert off["metrics"] == plain["metrics"] and off["tta"] == "off"
    assert eval_cli.main(["--model", fx.chars_model(), "--data", fx.chars_data(),
                          "--out", str(tmp_path), "--tta", "all", "--quiet"]) == 0
    assert "test-time augmentation 'all'" in capsys.readouterr().out
    report = json.load(open(tmp_path / evaluation.REPORT_FILE))
    assert report["tta"] == "all"
    assert report["num_examples"] == plain["num_examples"]
    # seven views of a model that scores well: TTA must not break it
    assert report["metrics"]["top1_accuracy"] >= plain["metrics"]["top1_accuracy"] - 0.1


def test_eval_tta_flag_is_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["--model", "m.keras", "--data", "d", "--out", "o", "--tta", "flip"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'flip'" in capsys.readouterr().err


def test_eval_tta_on_a_line_model_is_a_one_line_error(tmp_path, capsys):
    assert eval_cli.main(["--model", fx.lines_model(), "--data", fx.lines_data(),
                          "--out", str(tmp_path), "--tta", "shift", "--quiet"]) == 1
    assert "test-time augmentation (shifts and scalings of one character) is for " \
           "classifiers" in capsys.readouterr().err


def test_predict_with_tta_gives_the_averaged_probabilities(tmp_path, capsys):
    samples = fx.load_arrays(fx.chars_data(), "test")[1]
    paths = []
    for i in range(3):
        path = str(tmp_path / f"c{i}.png")
        from PIL import Image
        Image.fromarray(samples["image"][i]).save(path)
        paths.append(path)
    assert predict_cli.main(["--model", fx.chars_model(), "--data", fx.chars_data(),
                             "--tta", "all", "--top-k", "2", "--json", *paths]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tta"] == "all"
    runner = inference.with_tta(inference.load(fx.chars_model()), "all")
    for path, result in zip(paths, doc["results"]):
        from PIL import Image
        image = np.asarray(Image.open(path))
        x = imaging.normalize_char(image, fx.SIZE, fx.MARGIN)[None]
        probabilities = inference.softmax(inference.classify(runner, x))[0]
        assert result["prediction"] == fx.CHARS[int(np.argmax(probabilities))]
        assert result["confidence"] == pytest.approx(float(probabilities.max()), abs=1e-5)


@pytest.mark.slow
def test_export_with_tta_compares_int8_and_keras_with_the_same_views(tmp_path):
    from trainers.serving import export
    out = str(tmp_path / "export")
    report = export.export(fx.chars_model(), fx.chars_data(), out, export.ExportConfig(
        formats=("tflite_int8",), tta="all", eval_examples=1000, calibration_examples=50,
        latency_runs=0, progress=False))
    assert report["eval"]["tta"] == "all"
    assert "top1_accuracy, tta all" in export.summary_table(report)
    int8 = report["formats"]["tflite_int8"]
    assert int8["status"] == "ok"
    # the report's figures are hccr-eval's with the same flag, for both models
    for path, entry in ((fx.chars_model(), report["keras"]), (int8["path"], int8)):
        evaluated = evaluation.evaluate(path, fx.chars_data(), "test", progress=False,
                                        tta="all")
        assert evaluated["metrics"]["top1_accuracy"] == entry["metrics"]["top1_accuracy"]
    plain = evaluation.evaluate(int8["path"], fx.chars_data(), "test", progress=False)
    assert int8["metrics"]["top1_accuracy"] >= plain["metrics"]["top1_accuracy"] - 0.1


def test_export_refuses_tta_for_a_line_model_before_writing(tmp_path):
    from trainers.serving import export
    out = tmp_path / "export"
    with pytest.raises(ValueError, match="test-time augmentation .* is for classifiers"):
        export.export(fx.lines_model(), fx.lines_data(), str(out),
                      export.ExportConfig(formats=("tflite",), tta="shift", progress=False))
    assert not out.exists()
