"""Tests for trainers/serving/evaluation.py and hccr-eval: metrics, report files and plots, and the
one-loader-for-every-format rule (trainers/serving/inference.py). Exported formats are evaluated in
test_export.py."""
import csv
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import test_eval_fixtures as fx  # noqa: E402
from trainers.serving import eval_cli, evaluation, inference


def test_edit_distance():
    assert evaluation.edit_distance("", "") == 0
    assert evaluation.edit_distance("永和九年", "永和九年") == 0
    assert evaluation.edit_distance("永和九年", "永九年") == 1
    assert evaluation.edit_distance("永和", "和永") == 2
    assert evaluation.edit_distance("", "岁在") == 2
    assert evaluation.edit_distance("kitten", "sitting") == 3


@pytest.mark.parametrize("reference,prediction,distance", [
    ("", "", 0),
    ("", "永和九年", 4),  # empty reference: every predicted character is an insertion
    ("永和九年", "", 4),  # empty prediction: every reference character is a deletion
    ("永和九年，岁在癸丑", "永和九年，岁在癸丑", 0),
    ("永和九年", "和九年永", 2),
    ("暮春之初会于会稽", "暮春初会于会稽山阴", 3),
    ("兰亭", "蘭亭", 1),  # traditional vs simplified: different code points
    ("a永b", "a水b", 1),
    ("𠀀𠀁", "𠀁", 1),  # beyond the BMP: one code point each, not UTF-16 halves
])
def test_edit_distance_edge_cases_match_the_former_pure_python_loop(reference, prediction,
                                                                     distance):
    from bench.bench_cer import python_edit_distance
    assert python_edit_distance(reference, prediction) == distance
    assert evaluation.edit_distance(reference, prediction) == distance
    assert evaluation.edit_distance(prediction, reference) == distance


def test_cer_matches_the_former_pure_python_loop_on_synthetic_lines():
    from bench.bench_cer import python_edit_distance, synthetic_lines
    references, predictions = synthetic_lines(300, seed=1)
    expected = [python_edit_distance(r, h) for r, h in zip(references, predictions)]
    assert 0 < sum(expected) < sum(len(r) for r in references)  # some errors, not all wrong
    assert [evaluation.edit_distance(r, h) for r, h in zip(references, predictions)] == expected
    m = evaluation.line_metrics(references, predictions)
    assert m["edit_distance"] == sum(expected)
    assert evaluation.line_metrics([], []) == {"cer": 0.0, "line_accuracy": 0.0,
                                               "edit_distance": 0, "reference_chars": 0,
                                               "lines": 0}


def test_line_metrics():
    m = evaluation.line_metrics(["永和九年", "岁在"], ["永和九年", "岁"])
    assert m["cer"] == pytest.approx(1 / 6)
    assert m["line_accuracy"] == 0.5
    assert (m["edit_distance"], m["reference_chars"], m["lines"]) == (1, 6, 2)


def test_classifier_metrics_and_confused_pairs():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    top_k = np.array([[0, 1], [1, 0], [1, 2], [1, 0], [1, 2], [2, 0], [2, 1], [0, 2]])
    m = evaluation.classifier_metrics(y_true, top_k, 3)
    assert m["top1_accuracy"] == pytest.approx(5 / 8)
    assert m["top5_accuracy"] == pytest.approx(7 / 8)  # top-2 here
    from sklearn.metrics import f1_score
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, top_k[:, 0], average="weighted"))
    assert m["confusion"].sum() == 8 and m["confusion"][0, 1] == 2
    pairs = evaluation.most_confused(m["confusion"], "永和九", n=5)
    assert pairs[0] == {"true_id": 0, "true": "永", "predicted_id": 1, "predicted": "和",
                        "count": 2, "rate": pytest.approx(2 / 3)}
    assert [p["count"] for p in pairs] == [2, 1]


def test_cjk_font_is_found():
    font = evaluation.find_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed")
    from matplotlib.ft2font import FT2Font
    assert ord("永") in FT2Font(font).get_charmap()


def test_hccr_eval_on_a_keras_classifier(tmp_path, capsys):
    out = str(tmp_path / "eval")
    assert eval_cli.main(["--model", fx.chars_model(), "--data", fx.chars_data(),
                          "--split", "test", "--out", out, "--batch-size", "16"]) == 0
    printed = capsys.readouterr()
    assert "top-1" in printed.out and "eval test" in printed.err  # summary and progress
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    m = report["metrics"]
    assert report["format"] == "keras" and report["num_examples"] == 36
    assert 0 <= m["top1_accuracy"] <= m["top5_accuracy"] <= 1 and 0 <= m["weighted_f1"] <= 1
    with open(os.path.join(out, "per_class.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["char"] for r in rows] == list(fx.CHARS)
    assert sum(int(r["support"]) for r in rows) == 36
    correct = sum(float(r["recall"]) * int(r["support"]) for r in rows)
    assert correct / 36 == pytest.approx(m["top1_accuracy"], abs=1e-3)
    assert os.path.getsize(os.path.join(out, "confusion.png")) > 1000
    assert os.path.getsize(os.path.join(out, "confused_samples.png")) > 1000
    from PIL import Image
    with Image.open(os.path.join(out, "confusion.png")) as png:
        assert png.size[0] > 200
    if evaluation.find_cjk_font():
        assert report["plot"]["font"] and set(report["plot"]["classes"]) <= set(fx.CHARS)
    pairs = report["most_confused"]
    assert all(p["count"] > 0 and p["true"] != p["predicted"] for p in pairs)
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)
    with open(os.path.join(out, "confused_pairs.csv"), encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == len(pairs)


class _ReadsFirstClassAsSecond(inference.Runner):
    """The fixture classifier, except that whatever it reads as class 0 it reports as class 1:
    a known confusion (class 0 -> 1) beside correct reads of class 1."""

    def __init__(self, base):
        self.__dict__.update(vars(base))
        self.base = base

    def _run(self, x):
        logits = np.array(self.base.predict(x))
        is_first = logits.argmax(axis=-1) == 0
        logits[is_first, 1] = logits[is_first, 0] + 1.0
        return logits


def test_confused_samples_grid_shows_the_real_examples(tmp_path):
    runner = _ReadsFirstClassAsSecond(inference.load(fx.chars_model()))
    out = str(tmp_path / "eval")
    report = evaluation.evaluate(runner, fx.chars_data(), "test", out, batch_size=8,
                                 progress=False, keep_predictions=True)
    y_true = report["_predictions"]["y_true"]
    y_pred = report["_predictions"]["top_k"][:, 0]
    assert report["files"]["confused_samples_png"] == "confused_samples.png"
    grid = report["confused_samples"]
    assert [(p["true"], p["predicted"]) for p in grid["pairs"]] == [
        (p["true"], p["predicted"]) for p in report["most_confused"]]
    first = next(p for p in grid["pairs"] if (p["true"], p["predicted"]) == ("永", "和"))
    assert first["count"] == int(((y_true == 0) & (y_pred == 1)).sum()) >= 1
    for pair in grid["pairs"]:
        t, p = fx.CHARS.index(pair["true"]), fx.CHARS.index(pair["predicted"])
        assert pair["misread"] and all(y_true[i] == t and y_pred[i] == p
                                       for i in pair["misread"])
        assert all(y_true[i] == p == y_pred[i] for i in pair["correct"])
    assert first["correct"], "class 1 is read correctly by the fixture model"
    # The images drawn are the split's examples at those indices.
    info = evaluation.metadata.load(fx.chars_data())
    shown = evaluation.read_examples(info, "test", first["misread"] + first["correct"], y_true)
    test_images = np.concatenate([b["image"] for b in evaluation.read_split(info, "test")])
    for index, image in shown.items():
        np.testing.assert_array_equal(image, test_images[index])
    from PIL import Image
    with Image.open(os.path.join(out, "confused_samples.png")) as png:
        width, height = png.size
    assert width > 400 and height > 100 * len(grid["pairs"])
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        assert json.load(f)["confused_samples"]["pairs"] == grid["pairs"]


def test_pair_sample_indices_and_a_changed_order():
    y_true = np.array([0, 0, 1, 1, 0, 2, 1])
    y_pred = np.array([1, 0, 1, 1, 1, 1, 1])
    pairs = [{"true_id": 0, "predicted_id": 1, "count": 2},
             {"true_id": 2, "predicted_id": 1, "count": 1},
             {"true_id": 1, "predicted_id": 2, "count": 0}]
    got = evaluation.pair_sample_indices(y_true, y_pred, pairs, misread=1, correct=5)
    assert [(g["misread"], g["correct"]) for g in got] == [([0], [2, 3, 6]), ([5], [2, 3, 6]),
                                                           ([], [])]
    info = evaluation.metadata.load(fx.chars_data())
    labels = np.concatenate([b["label"] for b in evaluation.read_split(info, "test")])
    with pytest.raises(RuntimeError, match="read in a different order"):
        evaluation.read_examples(info, "test", [len(labels) - 1], labels[::-1].copy())


def test_hccr_eval_on_a_line_model(tmp_path):
    out = str(tmp_path / "eval")
    assert eval_cli.main(["--model", fx.lines_model(), "--data", fx.lines_data(),
                          "--split", "test", "--out", out, "--beam-width", "4",
                          "--max-examples", "5", "--quiet"]) == 0
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["task"] == "lines" and report["num_examples"] == 5
    for decoder in ("greedy", "beam"):
        m = report["metrics"][decoder]
        assert m["lines"] == 5 and m["cer"] >= 0 and 0 <= m["line_accuracy"] <= 1
    assert report["beam_width"] == 4
    assert os.path.exists(os.path.join(out, "errors.csv"))


def test_model_and_data_must_match(tmp_path, capsys):
    assert eval_cli.main(["--model", fx.chars_model(), "--data", fx.lines_data(),
                          "--out", str(tmp_path), "--quiet"]) == 1
    assert "classifier" in capsys.readouterr().err
    assert eval_cli.main(["--model", fx.chars_model(), "--data", fx.chars_data(),
                          "--split", "nope", "--out", str(tmp_path), "--quiet"]) == 1
    assert "no shards match" in capsys.readouterr().err


def test_detect_format(tmp_path):
    assert inference.detect_format(fx.chars_model()) == "keras"
    (tmp_path / "m.onnx").write_bytes(b"")
    assert inference.detect_format(str(tmp_path / "m.onnx")) == "onnx"
    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(inference.ModelFormatError, match="unknown model format"):
        inference.detect_format(str(tmp_path / "m.pt"))
    with pytest.raises(inference.ModelFormatError, match="saved_model.pb"):
        inference.detect_format(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        inference.detect_format(str(tmp_path / "missing.tflite"))


def test_fit_width_pads_or_squeezes():
    image = np.zeros((4, 10), np.uint8)
    padded = inference.fit_width(image, 16)
    assert padded.shape == (4, 16) and (padded[:, 10:] == 255).all()
    assert inference.fit_width(image, 6).shape == (4, 6)
    batch, widths = inference.pad_lines([image, np.zeros((4, 3), np.uint8)])
    assert batch.shape == (2, 4, 10) and list(widths) == [10, 3]
    assert (batch[1, :, 3:] == 255).all()
    assert list(inference.time_steps(np.array([10, 3, 100]), 5)) == [2, 1, 5]
