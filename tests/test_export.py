"""Tests for trainers/serving/export.py and trainers/serving/tensorrt.py: every default format
exported from a tiny trained model and evaluated through hccr-eval, the SavedModel serving
signature on raw images of odd sizes, TensorRT's missing-dependency failure, and atomic output."""
import io
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from beam_preprocess.contract import imaging
from beam_preprocess.contract.dgrl import read_dgrl  # noqa: E402
from beam_preprocess.contract.gnt import read_gnt  # noqa: E402
from tests import test_eval_fixtures as fx  # noqa: E402
from trainers.serving import eval_cli, export, export_cli, inference, predict, tensorrt

# INT8 tolerance (also stated in docs/benchmarks.md): on the 36-image test split, full-INT8
# TFLite keeps top-1 within 1 image (2.8 points) of the float32 TFLite model and agrees with
# the Keras model on at least 34 of the 36 top-1 predictions. The float formats must agree
# exactly. (The benchmark checks INT8 on 1000 real CASIA images: docs/benchmarks.md.)
INT8_MAX_TOP1_DROP = 1 / 36 + 1e-9
INT8_MIN_AGREEMENT = 34 / 36 - 1e-9


def _gnt_bitmaps(n=12):
    return [s.image for s in list(read_gnt(fx.gnt_path(5)))[:n]]


# === Preprocessing in TensorFlow ===


def test_tf_normalize_char_matches_numpy():
    import tensorflow as tf
    rng = np.random.default_rng(0)
    bitmaps = _gnt_bitmaps(20)
    for shape in [(3, 200), (7, 9), (91, 37)]:
        image = np.full(shape, 255, np.uint8)
        image[rng.random(shape) < 0.3] = 0
        image[0, 0] = 10
        bitmaps.append(image)
    for image in bitmaps:
        for size, margin in ((32, 2), (64, 4)):
            expected = imaging.normalize_char(image, size, margin).astype(int)
            got = export.tf_normalize_char(tf.constant(image), size, margin,
                                           imaging.INK_THRESHOLD).numpy()
            diff = np.abs(expected - got)
            assert got.shape == (size, size)
            assert diff.max() <= 2 and diff.mean() < 0.2, (image.shape, diff.max(), diff.mean())
    blank = export.tf_normalize_char(tf.fill([5, 7], tf.constant(255, tf.uint8)), 32, 2, 250)
    assert (blank.numpy() == 255).all()
    # One gray level is no ink, whatever the level (numpy raises EmptyImageError).
    one_level = export.tf_normalize_char(tf.constant([[10]], tf.uint8), 32, 2, 250)
    assert (one_level.numpy() == 255).all()


def test_tf_normalize_background_is_exactly_numpy():
    """The serving signature's background rule gives the same bytes as preprocess and
    hccr-predict, on clean, grey, gradient, noisy and inverted images, and degenerate ones."""
    import tensorflow as tf
    fn = tf.function(export.tf_normalize_background,
                     input_signature=[tf.TensorSpec([None, None], tf.uint8)])
    rng = np.random.default_rng(0)
    images = []
    for image in _gnt_bitmaps(6):
        h, w = image.shape
        light = np.linspace(190.0, 250.0, w)[None, :] + np.zeros((h, 1))
        images += [image, 255 - image, np.round(image * (light / 255.0)).astype(np.uint8),
                   np.clip(np.round(image * 0.85 + rng.normal(0, 6, image.shape)), 0,
                           255).astype(np.uint8)]
    images += [np.full((3, 4), 7, np.uint8), np.zeros((1, 1), np.uint8),
               np.array([[0, 255]], np.uint8), np.array([[0, 200, 100]], np.uint8)]
    for image in images:
        expected = imaging.normalize_background(image)
        got = fn(tf.constant(image)).numpy()
        assert np.array_equal(expected, got), image.shape
    assert fn(tf.zeros([0, 3], tf.uint8)).shape == (0, 3)


def test_tf_normalize_line_matches_numpy():
    import tensorflow as tf
    for line in read_dgrl(fx.dgrl_path(5)).lines:
        expected = imaging.normalize_line(line.image, 48, 4).astype(int)
        got = export.tf_normalize_line(tf.constant(line.image), 48, 4, 250).numpy()
        width = export.tf_line_width(tf.constant(line.image), 48, 4, 250).numpy()
        assert got.shape == expected.shape and width == expected.shape[1]
        diff = np.abs(expected - got)
        assert diff.max() <= 2 and diff.mean() < 0.2
        padded = export.tf_normalize_line(tf.constant(line.image), 48, 4, 250, pad_to=width + 9)
        assert padded.shape[1] == width + 9 and (padded.numpy()[:, width:] == 255).all()


# === Every format, evaluated by hccr-eval ===


def _check_export_dir(out, report, fmt):
    entry = report["formats"][fmt]
    assert entry["status"] == "ok", (fmt, entry.get("error"), entry.get("traceback"))
    directory = os.path.join(out, fmt)
    assert os.path.isfile(os.path.join(directory, inference.CHARSET_FILE))
    info = inference.ModelInfo.load(os.path.join(directory, inference.MODEL_INFO_FILE))
    assert info.format == fmt and info.task == report["task"]
    assert entry["size_bytes"] > 0 and entry["latency_ms"] > 0
    return entry, info


def _eval_cli(model, data, out):
    assert eval_cli.main(["--model", model, "--data", data, "--split", "test", "--out", out,
                          "--quiet"]) == 0
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_classifier_exports_to_every_default_format(tmp_path):
    out, report = fx.chars_export()
    assert set(report["formats"]) == set(export.DEFAULT_FORMATS)
    assert not [n for n in os.listdir(out) if n.startswith(".")], "temporary dirs left behind"
    with open(os.path.join(out, export.REPORT_FILE), encoding="utf-8") as f:
        assert json.load(f)["formats"].keys() == report["formats"].keys()
    keras_top1 = report["keras"]["metrics"]["top1_accuracy"]
    assert keras_top1 > 0.7, "the fixture model should have learned something"
    top1 = {}
    for fmt in export.DEFAULT_FORMATS:
        entry, info = _check_export_dir(out, report, fmt)
        path = entry["path"]
        assert info.image_height == fx.SIZE and info.margin == fx.MARGIN
        evaluated = _eval_cli(path, fx.chars_data(), str(tmp_path / fmt))
        assert evaluated["format"] == inference.detect_format(path)
        assert evaluated["num_examples"] == 36
        top1[fmt] = evaluated["metrics"]["top1_accuracy"]
        # hccr-eval and the export report judge the format identically.
        assert top1[fmt] == pytest.approx(entry["metrics"]["top1_accuracy"])
    for fmt in ("saved_model", "tflite_float32", "onnx"):
        assert top1[fmt] == pytest.approx(keras_top1), fmt
        assert report["formats"][fmt]["agreement"] == 1.0
    assert report["formats"]["onnx"]["parity_max_abs_diff"] < 1e-3
    assert top1["tflite_float32"] - top1["tflite_int8"] <= INT8_MAX_TOP1_DROP
    assert report["formats"]["tflite_int8"]["agreement"] >= INT8_MIN_AGREEMENT
    runner = inference.load(report["formats"]["tflite_int8"]["path"])
    assert runner.input_dtype == np.int8 and runner.fixed_batch is None


@pytest.mark.slow
def test_line_model_exports_to_every_default_format(tmp_path):
    out, report = fx.lines_export()
    width = report["line_width"]
    assert width % 16 == 0
    for fmt in export.DEFAULT_FORMATS:
        entry, info = _check_export_dir(out, report, fmt)
        runner = inference.load(entry["path"])
        assert runner.sequence
        if fmt.startswith("tflite"):  # the batch-1, fixed-width (unrolled) variant
            assert (runner.fixed_batch, runner.input_width, info.image_width) == (1, width, width)
        else:
            assert runner.input_width is None and info.image_width is None
        evaluated = _eval_cli(entry["path"], fx.lines_data(), str(tmp_path / fmt))
        metrics = evaluated["metrics"]
        assert set(metrics["greedy"]) >= {"cer", "line_accuracy"} and "beam" in metrics
        assert metrics["cer"] == pytest.approx(entry["metrics"]["cer"])
    for fmt in ("saved_model", "onnx"):
        assert report["formats"][fmt]["agreement"] == 1.0


# === The SavedModel serving signatures ===


def _saved_model(export_fn):
    import tensorflow as tf
    out, _ = export_fn()
    return tf.saved_model.load(os.path.join(out, "saved_model"))


@pytest.mark.slow
def test_serving_signature_takes_raw_images_of_any_size():
    import tensorflow as tf
    loaded = _saved_model(fx.chars_export)
    serve = loaded.signatures["serving_default"]
    reference = predict.Predictor(fx.chars_model(), fx.chars_data(), top_k=5)
    bitmaps = _gnt_bitmaps(8)
    assert len({b.shape for b in bitmaps}) > 1
    expected = reference.predict([predict.Item(str(i), b) for i, b in enumerate(bitmaps)])
    for bitmap, exp in zip(bitmaps, expected):
        out = serve(images=tf.constant(bitmap[None]))
        assert out["chars"].shape == (1, 5) and out["probabilities"].shape == (1, 5)
        assert out["chars"][0, 0].numpy().decode() == exp["prediction"]
        assert out["probabilities"][0, 0].numpy() == pytest.approx(exp["confidence"], abs=0.02)
        assert np.all(np.diff(out["probabilities"][0].numpy()) <= 0)
    # A batch of different sizes, padded with background, gives the same answers.
    h = max(b.shape[0] for b in bitmaps) + 3
    w = max(b.shape[1] for b in bitmaps) + 5
    batch = np.full((len(bitmaps), h, w), 255, np.uint8)
    for i, b in enumerate(bitmaps):
        batch[i, 2:2 + b.shape[0], 1:1 + b.shape[1]] = b
    out = serve(images=tf.constant(batch))
    assert [c.decode() for c in out["chars"][:, 0].numpy()] == [e["prediction"]
                                                               for e in expected]
    # Encoded PNG bytes.
    from PIL import Image
    blobs = []
    for b in bitmaps[:3]:
        buf = io.BytesIO()
        Image.fromarray(b).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    out = loaded.signatures["serve_encoded"](encoded=tf.constant(blobs))
    assert [c.decode() for c in out["chars"][:, 0].numpy()] == [e["prediction"]
                                                               for e in expected[:3]]
    # An image without ink still gets an answer (a blank canvas), not an error.
    out = serve(images=tf.fill([1, 17, 23], tf.constant(255, tf.uint8)))
    assert out["chars"].shape == (1, 5)


@pytest.mark.slow
def test_line_serving_signature_on_raw_lines():
    import tensorflow as tf
    loaded = _saved_model(fx.lines_export)
    serve = loaded.signatures["serving_default"]
    lines = read_dgrl(fx.dgrl_path(6)).lines[:3]
    reference = predict.Predictor(fx.lines_model(), fx.lines_data(), top_k=5)
    expected = reference.predict([predict.Item(str(i), line.image)
                                  for i, line in enumerate(lines)])
    for line, exp in zip(lines, expected):
        out = serve(images=tf.constant(line.image[None]))
        assert out["texts"].shape == (1, 5) and out["probabilities"].shape == (1, 5)
        # The barely trained CRNN has near-ties, which a gray level of normalization
        # difference may reorder: the best path must be among the numpy path's best five.
        assert out["texts"][0, 0].numpy().decode() in [p["text"] for p in exp["top_k"]]
    logits = loaded.signatures["logits"]
    x = np.zeros((2, fx.SIZE, 40, 1), np.float32)
    assert logits(image=tf.constant(x))["logits"].shape[:2] == (2, 10)


# === TensorRT ===


def _has_tensorrt():
    try:
        tensorrt.check_engine_builder()
        return True
    except tensorrt.MissingDependencyError:
        return False


def test_tensorrt_checks_name_what_is_missing():
    if _has_tensorrt():
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(tensorrt.MissingDependencyError) as err:
        tensorrt.check_engine_builder()
    assert "tensorrt" in str(err.value) and "GPU" in str(err.value)
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(tensorrt.MissingDependencyError) as err:
            tensorrt.check_tftrt()
        message = str(err.value)
        assert "TensorRT" in message and "tensorflow[and-cuda]==2.17.1" in message
        assert "GPU" in message
    with pytest.raises(tensorrt.MissingDependencyError):
        inference.EngineRunner("model.engine")


def test_tensorrt_stages_fail_cleanly_and_others_export(tmp_path, capsys):
    if _has_tensorrt():
        pytest.skip("TensorRT and a GPU are present")
    out = str(tmp_path / "export")
    status = export_cli.main(["--model", fx.chars_model(), "--data", fx.chars_data(),
                              "--formats", "tensorrt,tflite_float32", "--out", out,
                              "--eval-examples", "0", "--latency-runs", "0", "--quiet"])
    assert status == export_cli.EXIT_UNAVAILABLE
    with open(os.path.join(out, export.REPORT_FILE), encoding="utf-8") as f:
        formats = json.load(f)["formats"]
    assert formats["tflite_float32"]["status"] == "ok"
    assert os.path.isfile(os.path.join(out, "tflite_float32", "model.tflite"))
    for fmt in export.TENSORRT_FORMATS:
        assert formats[fmt]["status"] == "unavailable"
        assert "TensorRT" in formats[fmt]["error"] or "tensorrt" in formats[fmt]["error"]
        assert "GPU" in formats[fmt]["error"]
        assert not os.path.exists(os.path.join(out, fmt))
    assert sorted(os.listdir(out)) == [export.REPORT_FILE, "tflite_float32"]
    assert "needs" in capsys.readouterr().err


# === Atomic output and options ===


def test_failed_export_keeps_previous_output(tmp_path, monkeypatch):
    out = str(tmp_path / "export")
    config = export.ExportConfig(formats=["tflite_float32"], eval_examples=0, latency_runs=0,
                                 progress=False)
    first = export.export(fx.chars_model(), fx.chars_data(), out, config)
    model_file = first["formats"]["tflite_float32"]["path"]
    before = open(model_file, "rb").read()

    def broken(ctx, tmp):
        with open(os.path.join(tmp, "model.tflite"), "wb") as f:
            f.write(b"half-written")
        raise RuntimeError("converter crashed")

    monkeypatch.setitem(export.EXPORTERS, "tflite_float32", broken)
    second = export.export(fx.chars_model(), fx.chars_data(), out, config)
    entry = second["formats"]["tflite_float32"]
    assert entry["status"] == "failed" and "converter crashed" in entry["error"]
    assert open(model_file, "rb").read() == before
    assert sorted(os.listdir(out)) == [export.REPORT_FILE, "tflite_float32"]


def test_atomic_dir_replaces_and_cleans_up(tmp_path):
    final = str(tmp_path / "fmt")
    with export.atomic_dir(final) as tmp:
        open(os.path.join(tmp, "a"), "w").close()
    with export.atomic_dir(final) as tmp:
        open(os.path.join(tmp, "b"), "w").close()
    assert os.listdir(final) == ["b"]
    with pytest.raises(KeyError):
        with export.atomic_dir(final) as tmp:
            raise KeyError("boom")
    assert sorted(os.listdir(tmp_path)) == ["fmt"]


def test_parse_formats():
    assert export.parse_formats("default") == list(export.DEFAULT_FORMATS)
    assert export.parse_formats("all") == list(export.ALL_FORMATS)
    assert export.parse_formats("onnx, tflite") == ["onnx", *export.TFLITE_FORMATS]
    with pytest.raises(ValueError, match="unknown export format 'pytorch'"):
        export.parse_formats("pytorch")
    assert export_cli.main(["--model", "m.keras", "--data", "d", "--out", "o",
                            "--formats", "nope"]) == 2


def test_float32_clone_of_mixed_precision_model():
    import keras

    import models
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build_model("crnn_tiny", num_classes=5, input_shape=(32, None, 1))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    clone = export.float32_clone(model, input_shape=(32, 64, 1), batch_size=1, unroll=True)
    assert all(layer.compute_dtype == "float32" for layer in clone.layers)
    assert clone.input_shape == (1, 32, 64, 1)
    lstm = clone.get_layer("bilstm0").forward_layer
    assert lstm.unroll
    x = np.random.default_rng(0).random((1, 32, 64, 1), dtype=np.float32)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy().astype(np.float32),
                               atol=0.1)
