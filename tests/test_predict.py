"""Tests for trainers/predict.py and hccr-predict: PNG/JPEG, GNT and DGRL inputs, any model
format, charset from --data or from the files next to the model, text/JSON/JSONL output."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from beam_preprocess import imaging  # noqa: E402
from beam_preprocess.gnt import read_gnt  # noqa: E402
from tests import test_eval_fixtures as fx  # noqa: E402
from trainers import inference, predict, predict_cli  # noqa: E402


def _run_json(capsys, argv):
    assert predict_cli.main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _image_files(tmp_path, n=4):
    samples = list(read_gnt(fx.gnt_path(6)))[:n]
    paths = []
    for i, s in enumerate(samples):
        ext = "png" if i % 2 == 0 else "jpg"
        path = str(tmp_path / f"{i}-{s.char}.{ext}")
        Image.fromarray(s.image).convert("RGB").save(path, quality=95)
        paths.append(path)
    return samples, paths


def test_predict_png_and_jpeg_with_keras_model(tmp_path, capsys):
    samples, paths = _image_files(tmp_path)
    doc = _run_json(capsys, ["--model", fx.chars_model(), "--data", fx.chars_data(),
                             "--top-k", "3", *paths])
    assert doc["task"] == "chars" and len(doc["results"]) == len(paths)
    runner = inference.load(fx.chars_model())
    for sample, path, result in zip(samples, paths, doc["results"]):
        assert result["source"] == path
        assert len(result["top_k"]) == 3
        probs = [c["probability"] for c in result["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 < result["confidence"] <= 1
        assert result["prediction"] == result["top_k"][0]["char"]
        if path.endswith(".png"):  # lossless: exactly the numpy normalization + model
            x = imaging.normalize_char(sample.image, fx.SIZE, fx.MARGIN)[None]
            logits = inference.classify(runner, x)[0]
            assert result["prediction"] == fx.CHARS[int(np.argmax(logits))]
            assert result["confidence"] == pytest.approx(
                float(inference.softmax(logits)[np.argmax(logits)]), abs=1e-5)


@pytest.mark.slow
def test_predict_gnt_with_self_describing_export(tmp_path, capsys):
    out, report = fx.chars_export()
    model = report["formats"]["tflite_int8"]["path"]  # charset.txt + model_info.json beside it
    assert predict_cli.main(["--model", model, fx.gnt_path(5), "--batch-size", "7",
                             "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert "labelled inputs correct" in captured.err
    samples = list(read_gnt(fx.gnt_path(5)))
    assert len(doc["results"]) == len(samples) == 30
    assert [r["truth"] for r in doc["results"]] == [s.char for s in samples]
    assert all(r["correct"] == (r["prediction"] == r["truth"]) for r in doc["results"])
    assert doc["model_info"]["format"] == "tflite_int8"


def test_predict_text_and_jsonl_output(tmp_path, capsys):
    _, paths = _image_files(tmp_path, 2)
    # The .keras file in its workdir, with charset.txt next to it: no --data needed.
    assert predict_cli.main(["--model", fx.chars_model(), *paths, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(paths[0] + "\t")
    assert predict_cli.main(["--model", fx.chars_model(), str(tmp_path), "--jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["source"] for r in records) == sorted(paths)


@pytest.mark.slow
def test_predict_dgrl_lines(capsys):
    out, report = fx.lines_export()
    for fmt in ("onnx", "tflite_float32"):
        doc = _run_json(capsys, ["--model", report["formats"][fmt]["path"], fx.dgrl_path(6),
                                 "--top-k", "2", "--beam-width", "4"])
        assert doc["task"] == "lines" and len(doc["results"]) == 6
        for r in doc["results"]:
            assert set(r) >= {"source", "prediction", "confidence", "greedy", "top_k", "truth"}
            assert len(r["top_k"]) == 2 and r["prediction"] == r["top_k"][0]["text"]
    keras_doc = _run_json(capsys, ["--model", fx.lines_model(), "--data", fx.lines_data(),
                                   fx.dgrl_path(6)])
    assert [r["truth"] for r in keras_doc["results"]] == [r["truth"] for r in doc["results"]]


def test_image_without_ink_is_reported_not_raised(tmp_path, capsys):
    blank = str(tmp_path / "blank.png")
    Image.new("L", (20, 30), 255).save(blank)
    doc = _run_json(capsys, ["--model", fx.chars_model(), blank])
    assert "no ink" in doc["results"][0]["error"]


def test_missing_charset_is_a_clear_error(tmp_path, capsys):
    import shutil
    model = str(tmp_path / "lonely.keras")
    shutil.copy(fx.chars_model(), model)
    image = str(tmp_path / "x.png")
    Image.new("L", (20, 30), 0).save(image)
    assert predict_cli.main(["--model", model, image]) == 1
    err = capsys.readouterr().err
    assert "no charset" in err and "--data" in err


def test_expand_paths_rejects_unknown_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported input"):
        predict.expand_paths([str(tmp_path / "notes.txt")])
    with pytest.raises(FileNotFoundError):
        predict.expand_paths([str(tmp_path / "missing.png")])
    assert predict.expand_paths([str(tmp_path)]) == []
