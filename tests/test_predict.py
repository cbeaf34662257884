"""Tests for trainers/serving/predict.py and hccr-predict: PNG/JPEG, GNT and DGRL inputs, any model
format, charset from --data or from the files next to the model, text/JSON/JSONL output."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from beam_preprocess.contract import imaging
from beam_preprocess.contract.gnt import read_gnt  # noqa: E402
from tests import test_eval_fixtures as fx  # noqa: E402
from trainers.serving import inference, predict, predict_cli


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
    assert predict_cli.main(["--model", fx.chars_model(), blank, "--json"]) == 1
    captured = capsys.readouterr()
    assert "no ink" in json.loads(captured.out)["results"][0]["error"]
    assert f"hccr-predict: {blank}: no ink" in captured.err


def _gnt_with_bad_size_field(path, record):
    """The bytes of a GNT file with the size field of record `record` made inconsistent."""
    import struct
    data = bytearray(open(path, "rb").read())
    offset = 0
    for _ in range(record):
        offset += struct.unpack_from("<I", data, offset)[0]
    size = struct.unpack_from("<I", data, offset)[0]
    struct.pack_into("<I", data, offset, size + 7)
    return bytes(data), offset


def test_each_input_stands_on_its_own(tmp_path, capsys):
    """A corrupt, truncated, empty, unsupported or missing input and a damaged GNT record each
    get one error naming them; every other input is still predicted; exit status 1."""
    _, good = _image_files(tmp_path, 2)
    png_bytes = open(good[0], "rb").read()
    broken = {"corrupt.png": b"\x89PNG this is not an image" * 10,
              "truncated.png": png_bytes[:len(png_bytes) // 2],
              "empty.png": b"", "empty.gnt": b"", "notes.txt": b"hello"}
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
    gnt_bytes, bad_offset = _gnt_with_bad_size_field(fx.gnt_path(6), 3)
    (tmp_path / "damaged.gnt").write_bytes(gnt_bytes)
    missing = str(tmp_path / "missing.png")
    inputs = [good[0], *(str(tmp_path / n) for n in broken), str(tmp_path / "damaged.gnt"),
              missing, good[1]]
    assert predict_cli.main(["--model", fx.chars_model(), *inputs, "--jsonl"]) == 1
    captured = capsys.readouterr()
    results = [json.loads(line) for line in captured.out.splitlines()]
    errors = {r["source"]: r["error"] for r in results if "error" in r}
    for name in broken:
        path = str(tmp_path / name)
        assert path in errors, name
        assert f"hccr-predict: {path}: " in captured.err
    assert errors[str(tmp_path / "empty.png")] == "empty file"
    assert "unsupported input" in errors[str(tmp_path / "notes.txt")]
    assert errors[missing] == "does not exist"
    damaged = f"{tmp_path / 'damaged.gnt'}:{bad_offset}"
    assert "damaged record" in errors[damaged]
    predicted = [r for r in results if "prediction" in r]
    assert {r["source"] for r in predicted} >= set(good)
    # Every GNT sample around the damaged one is still predicted.
    gnt_sources = [r["source"] for r in predicted if ".gnt:" in r["source"]]
    assert len(gnt_sources) >= len(list(read_gnt(fx.gnt_path(6)))) - 2
    assert f"{len(errors)} of {len(results)} inputs failed" in captured.err
    assert all(len(line.split("\n")) == 1 for line in captured.err.splitlines())


def test_text_output_has_one_error_line_per_failed_input(tmp_path, capsys):
    _, good = _image_files(tmp_path, 1)
    (tmp_path / "corrupt.jpg").write_bytes(b"not a jpeg")
    corrupt = str(tmp_path / "corrupt.jpg")
    assert predict_cli.main(["--model", fx.chars_model(), corrupt, good[0]]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{corrupt}\tERROR\t")
    assert lines[1].startswith(good[0] + "\t")


def test_decompression_bomb_limit_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    # 1,600 pixels: over the limit (PIL only warns); 10,000: over twice the limit (PIL raises).
    for side in (40, 100):
        Image.new("L", (side, side), 255).save(tmp_path / f"big{side}.png")
    small = str(tmp_path / "small.png")
    image = np.full((30, 30), 255, np.uint8)
    image[5:25, 14:17] = 0
    Image.fromarray(image).save(small)
    assert predict_cli.main(["--model", fx.chars_model(), str(tmp_path), "--jsonl"]) == 1
    captured = capsys.readouterr()
    results = {json.loads(line)["source"]: json.loads(line) for line in captured.out.splitlines()}
    for side in (40, 100):
        error = results[str(tmp_path / f"big{side}.png")]["error"]
        assert error.startswith("image too large") and "MAX_IMAGE_PIXELS" in error
    assert "prediction" in results[small]
    assert "Traceback" not in captured.err


def test_model_files_that_are_not_models_are_named(tmp_path, capsys):
    image = str(tmp_path / "x.png")
    Image.new("L", (20, 30), 0).save(image)
    for name in ("model.keras", "model.tflite", "model.onnx"):
        path = tmp_path / name
        path.write_bytes(b"this is not a model")
        with pytest.raises(inference.ModelFormatError, match=name):
            inference.load(str(path))
    fx_charset = os.path.join(os.path.dirname(fx.chars_model()), "charset.txt")
    import shutil
    shutil.copy(fx_charset, tmp_path / "charset.txt")
    assert predict_cli.main(["--model", str(tmp_path / "model.keras"), image]) == 1
    err = capsys.readouterr().err
    assert "not a Keras archive" in err and "File not found" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_charset_is_a_clear_error(tmp_path, capsys):
    import shutil
    model = str(tmp_path / "lonely.keras")
    shutil.copy(fx.chars_model(), model)
    image = str(tmp_path / "x.png")
    Image.new("L", (20, 30), 0).save(image)
    assert predict_cli.main(["--model", model, image]) == 1
    err = capsys.readouterr().err
    assert "no charset" in err and "--data" in err


def test_expand_paths_reports_unknown_files_without_raising(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.png").write_bytes(b"")
    notes, missing = str(tmp_path / "notes.txt"), str(tmp_path / "missing.png")
    (path, problem), = predict.expand_paths([notes])
    assert path == notes and "unsupported input" in problem
    assert predict.expand_paths([missing]) == [(missing, "does not exist")]
    assert predict.expand_paths([str(tmp_path)]) == [(str(tmp_path / "a.png"), None)]


def test_empty_directory_is_an_error(tmp_path, capsys):
    assert predict_cli.main(["--model", fx.chars_model(), str(tmp_path)]) == 1
    assert "no input files" in capsys.readouterr().err


def test_the_savedmodel_signature_decodes_like_predict():
    # export.beam_search_texts is what the SavedModel's serving_default runs for line models
    # (traced into a tf.function); hccr-predict and hccr-eval decode with models/ctc.py.
    import tensorflow as tf

    from models import ctc
    from trainers.serving import export
    chars = ["永", "和", "九", "年", "岁"]
    rng = np.random.default_rng(0)
    logits = (3 * rng.normal(size=(3, 10, len(chars) + 1))).astype(np.float32)
    lengths = np.array([10, 6, 2], np.int32)
    labels = tf.constant([""] + chars)

    @tf.function(input_signature=[tf.TensorSpec([None, None, len(chars) + 1], tf.float32),
                                  tf.TensorSpec([None], tf.int32)])
    def signature(x, n):
        return export.beam_search_texts(x, n, labels, beam_width=5, top_paths=3)

    served = signature(logits, lengths)
    texts = [[t.decode("utf-8") for t in row] for row in served["texts"].numpy()]
    paths = ctc.ctc_beam_paths(logits, lengths, beam_width=5, top_paths=3)
    assert texts == [[ctc.ids_to_text(ids, chars) for ids, _ in row] for row in paths]
    # The same log-probabilities; TensorFlow's exp and numpy's may differ in the last bit.
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               [[np.exp(p) for _, p in row] for row in paths], rtol=1e-6)
