"""Export of a trained `.keras` model to SavedModel, TFLite, ONNX and TensorRT, with a report.

    report = export("workdir/best.keras", "data/chars", "export/", formats=DEFAULT_FORMATS)

Layout of the output directory (one directory per format, each self-describing: the model,
`charset.txt` and `model_info.json`)::

    export/
      export_report.json         size, CPU latency, accuracy delta vs the Keras model, per format
      saved_model/               SavedModel: signatures serving_default, serve_encoded, logits
      tflite_float32/model.tflite
      tflite_float16/model.tflite
      tflite_dynamic/model.tflite   dynamic-range quantisation (int8 weights, float activations)
      tflite_int8/model.tflite      full INT8, int8 input and output, calibrated on the shards
      onnx/model.onnx               tf2onnx, checked against Keras with onnxruntime
      tftrt_fp16/, tftrt_int8/      TF-TRT SavedModels (TensorFlow with TensorRT + GPU only)
      trt_fp16/model.engine, trt_int8/model.engine   ONNX -> TensorRT engines (GPU only)

Every format is written into a temporary directory inside the output directory and renamed into
place when complete, so a failed or interrupted export never leaves a half-written model.
A stage that fails (a missing TensorRT, a converter error) is recorded in the report and the
other formats still export.

SavedModel signatures:

- `serving_default(images: uint8 [batch, height, width])`: raw images of any size (a batch
  padded where sizes differ, with the background's own level: padding then does not move the
  ink box, while 255 around a white-on-black image would turn its border light), dark ink
  on a light background or light ink on a dark one. Each image goes through the same
  normalization as the Beam job (`beam_preprocess.contract.imaging`, reimplemented in TensorFlow
  below:
  background to 255 by an Otsu split, white-on-black inverted; crop to ink, aspect-preserving
  antialiased bilinear resize, centre on a 255 canvas; lines: scale to the line height, pad).
  Classifiers return `chars` (string [batch, k]), `class_ids` (int32) and `probabilities`
  (softmax, float32), best first. Line models return `texts` (string [batch, k]) and
  `probabilities` (of each path, CTC beam search).
- `serve_encoded(encoded: string [batch])`: the same for PNG/JPEG/BMP/GIF file bytes.
- `logits(image: float32 [batch, H, W, 1])`: the training input (ink 1.0) -> logits; what
  `hccr-eval` runs.

The CRNN's TFLite models are the batch-1 variant at a fixed width (`line_width`; wider lines
are squeezed to it) with unrolled LSTMs: the converter cannot handle a dynamic batch, and full
INT8 of a BiLSTM crashes the converter unless the LSTM is unrolled.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from typing import Callable, Iterator, Sequence

import numpy as np

from beam_preprocess.contract import metadata
from trainers.serving import evaluation, inference
from trainers.serving.inference import CHARSET_FILE, MODEL_INFO_FILE, ModelInfo

TFLITE_FORMATS = ("tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8")
TENSORRT_FORMATS = ("tftrt_fp16", "tftrt_int8", "trt_fp16", "trt_int8")
DEFAULT_FORMATS = ("saved_model",) + TFLITE_FORMATS + ("onnx",)
ALL_FORMATS = DEFAULT_FORMATS + TENSORRT_FORMATS
REPORT_FILE = "export_report.json"
MODEL_FILES = {"onnx": "model.onnx", "trt_fp16": "model.engine", "trt_int8": "model.engine",
               **{fmt: "model.tflite" for fmt in TFLITE_FORMATS}}
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-3  # max |onnx - keras| logits, relative to max(1, max |keras logits|)


def parse_formats(spec: str | Sequence[str]) -> list[str]:
    """Format names from "all", "default", "tflite", "tensorrt" or a comma-separated list."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    groups = {"all": ALL_FORMATS, "default": DEFAULT_FORMATS, "tflite": TFLITE_FORMATS,
              "tensorrt": TENSORRT_FORMATS}
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        names = groups.get(item, (item,))
        for name in names:
            if name not in ALL_FORMATS:
                raise ValueError(f"unknown export format {name!r}; choose from "
                                 f"{', '.join(ALL_FORMATS)} or all, default, tflite, tensorrt")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("no export format given")
    return out


# === Preprocessing in TensorFlow (the serving signature) ===


def _round_size(tf, length, scale):
    # imaging._round_size: max(1, floor(length * scale + 0.5)), in float64 like numpy.
    return tf.maximum(tf.constant(1, tf.int64),
                      tf.cast(tf.floor(tf.cast(length, tf.float64) * scale + 0.5), tf.int64))


def _ink_box(tf, image, ink_threshold):
    ink = image < ink_threshold
    rows = tf.where(tf.reduce_any(ink, axis=1))[:, 0]
    cols = tf.where(tf.reduce_any(ink, axis=0))[:, 0]
    return rows, cols


def _resize_u8(tf, crop, height, width):
    size = tf.cast(tf.stack([height, width]), tf.int32)
    resized = tf.image.resize(tf.cast(crop, tf.float32)[..., None], size,
                              method="bilinear", antialias=True)[..., 0]
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _lower_median(tf, hist):
    # imaging._lower_median: the first level where the cumulative count reaches half.
    return tf.reduce_min(tf.where(2 * tf.cumsum(hist) >= tf.reduce_sum(hist))[:, 0])


def _histogram(tf, image):
    return tf.math.bincount(tf.reshape(tf.cast(image, tf.int32), [-1]), minlength=256,
                            maxlength=256, dtype=tf.int64)


def _otsu_threshold(tf, hist):
    """imaging._otsu_threshold: (t int64, whether there is a split at all)."""
    levels = tf.range(256, dtype=tf.int64)
    count0 = tf.cumsum(hist)[:255]
    sum0 = tf.cumsum(hist * levels)[:255]
    total, total_sum = tf.reduce_sum(hist), tf.reduce_sum(hist * levels)
    split = (count0 > 0) & (count0 < total)
    diff = tf.cast(total_sum * count0 - total * sum0, tf.float64)
    denom = tf.cast(tf.where(split, count0 * (total - count0), tf.ones_like(count0)), tf.float64)
    score = tf.where(split, diff * diff / denom, tf.constant(-1.0, tf.float64))
    t = tf.reduce_min(tf.where(tf.equal(score, tf.reduce_max(score)))[:, 0])
    return t, tf.reduce_any(split)


def _background_cut(tf, hist, t):
    """imaging._background_cut: (B, c), int64."""
    levels = tf.range(256, dtype=tf.int64)
    background_hist = tf.where(levels > t, hist, tf.zeros_like(hist))
    level = _lower_median(tf, background_hist)
    spread = _lower_median(tf, tf.math.bincount(
        tf.cast(tf.abs(levels - level), tf.int32), weights=background_hist, minlength=256,
        maxlength=256))
    return level, tf.maximum(t + 1, level - 9 * spread)


def _background_plane(tf, image, mask):
    """imaging._background_plane, with the same int64 sums and float64 steps."""
    shape = tf.shape(image, out_type=tf.int64)
    ys = tf.range(shape[0], dtype=tf.int64)[:, None]
    xs = tf.range(shape[1], dtype=tf.int64)[None, :]
    m = tf.cast(mask, tf.int64)
    v = tf.cast(image, tf.int64) * m

    def total(x):
        return tf.cast(tf.reduce_sum(x), tf.float64)

    n = total(m)
    sx, sy, sv = total(xs * m), total(ys * m), total(v)
    sxx, syy = total(xs * xs * m), total(ys * ys * m)
    sxy, sxv, syv = total(xs * ys * m), total(xs * v), total(ys * v)
    mx, my, mv = sx / n, sy / n, sv / n
    vxx, vyy, vxy = sxx / n - mx * mx, syy / n - my * my, sxy / n - mx * my
    cxv, cyv = sxv / n - mx * mv, syv / n - my * mv
    det = vxx * vyy - vxy * vxy
    tilted = (det > 1e-6 * vxx * vyy) & (det > 0.0)
    safe_det = tf.where(tilted, det, tf.constant(1.0, tf.float64))
    b = tf.where(tilted, (cxv * vyy - cyv * vxy) / safe_det, tf.constant(0.0, tf.float64))
    c = tf.where(tilted, (cyv * vxx - cxv * vxy) / safe_det, tf.constant(0.0, tf.float64))
    plane = mv + b * (tf.cast(xs, tf.float64) - mx) + c * (tf.cast(ys, tf.float64) - my)
    return tf.clip_by_value(plane, 1.0, 255.0)


def tf_normalize_background(image):
    """`beam_preprocess.contract.imaging.normalize_background` in TensorFlow, for one uint8 (H, W)
    image: dark ink on a 255 background, whatever the background was. Exact: integer
    histogram statistics and the same float64 steps as numpy."""
    import tensorflow as tf
    blank = tf.fill(tf.shape(image), tf.constant(255, tf.uint8))
    levels = tf.range(256, dtype=tf.int64)

    def normalized():
        hist = _histogram(tf, image)
        t, _ = _otsu_threshold(tf, hist)
        border = tf.cast(tf.concat([image[0, :], image[-1, :], image[:, 0], image[:, -1]], 0),
                         tf.int64)
        invert = 2 * tf.math.count_nonzero(border <= t) > tf.cast(tf.size(border), tf.int64)
        oriented = tf.where(invert, 255 - image, image)
        hist = tf.where(invert, tf.reverse(hist, [0]), hist)
        t = tf.where(invert, 254 - t, t)
        level, cut = _background_cut(tf, hist, t)
        plane = _background_plane(tf, oriented, tf.cast(oriented, tf.int64) >= cut)
        flat = tf.cast(tf.minimum(tf.constant(255.0, tf.float64), tf.floor(
            tf.cast(oriented, tf.float64) * tf.cast(level, tf.float64) / plane + 0.5)),
            tf.uint8)
        hist = _histogram(tf, flat)
        t, has_split = _otsu_threshold(tf, hist)
        level, cut = _background_cut(tf, hist, tf.where(has_split, t, 0))
        level = tf.maximum(level, 1)  # only without a split, where the table is not used
        table = tf.cast(tf.where(levels >= cut, tf.constant(255, tf.int64), tf.minimum(
            tf.constant(255, tf.int64), (510 * levels + level) // (2 * level))), tf.uint8)
        return tf.where(has_split, tf.gather(table, tf.cast(flat, tf.int32)), blank)

    def unless_one_level():
        one_level = tf.math.count_nonzero(_histogram(tf, image)) < 2
        return tf.cond(one_level, lambda: blank, normalized)

    def unless_clean():
        return tf.cond(_is_clean(tf, image), lambda: image, unless_one_level)

    return tf.cond(tf.size(image) > 0, unless_clean, lambda: image)


def _is_clean(tf, image):
    """imaging._is_clean: most of the border and most of the image are exactly 255."""
    border = tf.concat([image[0, :], image[-1, :], image[:, 0], image[:, -1]], 0)

    def mostly_255(x):
        return 2 * tf.math.count_nonzero(tf.equal(x, 255)) > tf.cast(tf.size(x), tf.int64)

    return mostly_255(border) & mostly_255(image)


def tf_normalize_char(image, size: int, margin: int, ink_threshold: int):
    """`beam_preprocess.contract.imaging.normalize_char` in TensorFlow, for one uint8 (H, W) image.

    An image without ink becomes a blank (all 255) canvas instead of raising.
    """
    import tensorflow as tf
    inner = size - 2 * margin
    image = tf_normalize_background(image)
    rows, cols = _ink_box(tf, image, ink_threshold)

    def normalized():
        top, bottom = rows[0], rows[-1] + 1
        left, right = cols[0], cols[-1] + 1
        crop = image[top:bottom, left:right]
        h, w = bottom - top, right - left
        scale = inner / tf.cast(tf.maximum(h, w), tf.float64)
        nh = tf.minimum(tf.constant(inner, tf.int64), _round_size(tf, h, scale))
        nw = tf.minimum(tf.constant(inner, tf.int64), _round_size(tf, w, scale))
        resized = _resize_u8(tf, crop, nh, nw)
        y, x = (size - nh) // 2, (size - nw) // 2
        return tf.pad(resized, tf.stack([tf.stack([y, size - nh - y]),
                                         tf.stack([x, size - nw - x])]), constant_values=255)

    out = tf.cond(tf.size(rows) > 0, normalized,
                  lambda: tf.fill([size, size], tf.constant(255, tf.uint8)))
    return tf.ensure_shape(out, [size, size])


def tf_line_width(image, height: int, margin: int, ink_threshold: int):
    """Width `normalize_line` gives a uint8 (H, W) line image (int64 scalar)."""
    import tensorflow as tf
    image = tf_normalize_background(image)
    rows, cols = _ink_box(tf, image, ink_threshold)

    def width():
        h = rows[-1] + 1 - rows[0]
        w = cols[-1] + 1 - cols[0]
        scale = (height - 2 * margin) / tf.cast(h, tf.float64)
        return _round_size(tf, w, scale) + 2 * margin

    return tf.cond(tf.size(rows) > 0, width, lambda: tf.constant(height, tf.int64))


def tf_normalize_line(image, height: int, margin: int, ink_threshold: int, pad_to=None):
    """`beam_preprocess.contract.imaging.normalize_line` in TensorFlow, for one uint8 (H, W) image,
    right-padded with 255 to `pad_to` columns when given. No ink: a blank line."""
    import tensorflow as tf
    inner = height - 2 * margin
    image = tf_normalize_background(image)
    rows, cols = _ink_box(tf, image, ink_threshold)

    def normalized():
        top, bottom = rows[0], rows[-1] + 1
        left, right = cols[0], cols[-1] + 1
        crop = image[top:bottom, left:right]
        scale = inner / tf.cast(bottom - top, tf.float64)
        nw = _round_size(tf, right - left, scale)
        resized = _resize_u8(tf, crop, tf.constant(inner, tf.int64), nw)
        return tf.pad(resized, [[margin, margin], [margin, margin]], constant_values=255)

    out = tf.cond(tf.size(rows) > 0, normalized,
                  lambda: tf.fill([height, height], tf.constant(255, tf.uint8)))
    if pad_to is not None:
        out = tf.pad(out, tf.stack([tf.constant([0, 0], tf.int64),
                                    tf.stack([tf.constant(0, tf.int64),
                                              tf.cast(pad_to, tf.int64) -
                                              tf.cast(tf.shape(out)[1], tf.int64)])]),
                     constant_values=255)
    return tf.ensure_shape(out, [height, None])


def _decode_image(tf, data):
    image = tf.io.decode_image(data, channels=1, expand_animations=False, dtype=tf.uint8)
    return image[..., 0]


def beam_search_texts(logits, lengths, labels, *, beam_width: int, top_paths: int) -> dict:
    """The line models' serving output: `models.ctc.ctc_beam_search` with its class ids looked
    up as text, in TensorFlow ops (the SavedModel signature decodes with them).

    Args:
      logits: float32 `(batch, time, N + 1)`.
      lengths: int32 `(batch,)` valid time steps per line.
      labels: string `(N + 1,)`: "" for the blank (class 0), then the charset in id order.
      beam_width, top_paths: as in `ctc_beam_search`.

    Returns:
      {"texts": string (batch, top_paths), "probabilities": float32 (batch, top_paths)},
      best first.
    """
    import tensorflow as tf

    from models import ctc
    decoded, log_probs = ctc.ctc_beam_search(logits, lengths, beam_width, top_paths)
    # The -1 padding reads as the blank, whose label is "".
    texts = tf.strings.reduce_join(tf.gather(labels, tf.maximum(decoded, ctc.BLANK_ID)),
                                   axis=-1)
    return {"texts": tf.transpose(texts), "probabilities": tf.exp(log_probs)}


def make_serving_functions(model, info: ModelInfo, chars: Sequence[str], top_k: int = 5,
                           beam_width: int = 10) -> dict:
    """The tf.functions of the SavedModel: serving_default, serve_encoded and logits."""
    import tensorflow as tf
    h = info.image_height
    w = info.image_width if info.task == "chars" else None
    size, margin, threshold = info.image_height, info.margin, info.ink_threshold
    charset = tf.constant(list(chars))
    k = min(top_k, len(chars))

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, 1], tf.float32, name="image")])
    def logits(image):
        return {"logits": tf.cast(model(image, training=False), tf.float32)}

    def to_input(images):
        return 1.0 - tf.cast(images, tf.float32)[..., None] / 255.0

    if info.task == "chars":
        def classify(get_image, n):
            images = tf.map_fn(
                lambda i: tf_normalize_char(get_image(i), size, margin, threshold),
                tf.range(n), fn_output_signature=tf.TensorSpec([size, size], tf.uint8))
            probs = tf.nn.softmax(tf.cast(model(to_input(images), training=False), tf.float32))
            values, ids = tf.math.top_k(probs, k)
            return {"chars": tf.gather(charset, ids), "class_ids": ids,
                    "probabilities": values}
        run = classify
    else:
        from models.crnn import CRNN_WIDTH_DOWNSAMPLE
        labels = tf.concat([tf.constant([""]), charset], axis=0)
        paths = k
        beam = max(beam_width, paths)

        def recognize(get_image, n):
            widths = tf.map_fn(lambda i: tf_line_width(get_image(i), size, margin, threshold),
                               tf.range(n), fn_output_signature=tf.int64)
            max_width = tf.reduce_max(widths)
            images = tf.map_fn(
                lambda i: tf_normalize_line(get_image(i), size, margin, threshold, max_width),
                tf.range(n), fn_output_signature=tf.TensorSpec([size, None], tf.uint8))
            out = tf.cast(model(to_input(images), training=False), tf.float32)
            lengths = tf.cast(tf.minimum(widths // CRNN_WIDTH_DOWNSAMPLE,
                                         tf.cast(tf.shape(out)[1], tf.int64)), tf.int32)
            return beam_search_texts(out, lengths, labels, beam_width=beam, top_paths=paths)
        run = recognize

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.uint8, name="images")])
    def serving_default(images):
        return run(lambda i: images[i], tf.shape(images)[0])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded")])
    def serve_encoded(encoded):
        return run(lambda i: _decode_image(tf, encoded[i]), tf.shape(encoded)[0])

    return {"serving_default": serving_default, "serve_encoded": serve_encoded,
            "logits": logits}


# === Model preparation ===


def _rewrite_config(config, unroll: bool):
    """Layer config with mixed-precision dtype policies set to float32 (and LSTMs unrolled)."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "unroll" and unroll:
                out[key] = True
            elif key == "dtype" and isinstance(value, dict) and \
                    str(value.get("config", {}).get("name", "")).startswith("mixed"):
                out[key] = "float32"
            else:
                out[key] = _rewrite_config(value, unroll)
        return out
    if isinstance(config, list):
        return [_rewrite_config(v, unroll) for v in config]
    return config


def float32_clone(model, *, input_shape=None, batch_size=None, unroll: bool = False):
    """A float32 copy of a (possibly mixed-precision) model with the same weights.

    Args:
      input_shape: a new `(H, W, C)` (e.g. a fixed line width), or None to keep the model's.
      batch_size: a fixed batch size (1 for the CRNN's TFLite variant), or None.
      unroll: unroll recurrent layers (needs a fixed width).
    """
    import keras
    shape = tuple(input_shape or model.input_shape[1:])
    inputs = keras.Input(shape=shape, batch_size=batch_size, name="image")

    def clone_layer(layer):
        return layer.__class__.from_config(_rewrite_config(layer.get_config(), unroll))

    clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def _write_saved_model(functions: dict, model, path: str) -> None:
    import keras
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, fn in functions.items():
        archive.add_endpoint(name, fn)
    with contextlib.redirect_stdout(sys.stderr):
        archive.write_out(path, verbose=False)


def _logits_saved_model(model, path: str, input_shape) -> None:
    """A SavedModel with only the float `logits` signature (input of converters)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32, name="image")])
    def logits(image):
        return {"logits": tf.cast(model(image, training=False), tf.float32)}

    _write_saved_model({"logits": logits}, model, path)


# === Atomic output ===


@contextlib.contextmanager
def atomic_dir(final_path: str) -> Iterator[str]:
    """Yields a temporary directory beside `final_path`; renames it into place on success
    (replacing an older export), removes it on failure."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(final_path)}-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(final_path):
        old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(final_path)}-", dir=parent)
        os.rmdir(old)
        os.rename(final_path, old)
    os.rename(tmp, final_path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomically(path: str, data) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def path_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


# === Measurements ===


def measure_speed(runner, sample: np.ndarray, *, runs: int = 30, batch: int = 32,
                  batch_runs: int = 5, warmup: int = 3) -> dict:
    """CPU latency at batch 1 (median and p90, ms) and throughput at `batch` (images/s).

    Args:
      runner: a `trainers.serving.inference.Runner`.
      sample: one float32 model input (1, H, W, 1).
    """
    for _ in range(warmup):
        runner.predict(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.predict(sample)
        times.append(time.perf_counter() - start)
    out = {"latency_ms": round(1000 * statistics.median(times), 3),
           "latency_p90_ms": round(1000 * float(np.percentile(times, 90)), 3)}
    if batch > 1 and batch_runs > 0:
        x = np.repeat(sample, batch, axis=0)
        runner.predict(x)
        start = time.perf_counter()
        for _ in range(batch_runs):
            runner.predict(x)
        out["throughput_per_s"] = round(batch * batch_runs / (time.perf_counter() - start), 1)
        out["throughput_batch"] = batch
    return out


# === Export ===


@dataclasses.dataclass
class ExportConfig:
    """Options of `export` (the hccr-export flags).

    Attributes:
      formats: formats to write (see `parse_formats`).
      eval_split: split for the accuracy delta (default: test, else validation, else the first).
      eval_examples: examples of `eval_split` to evaluate each format on (0: skip evaluation).
      calibration_split: split drawn for INT8 calibration (default: train, else eval_split).
      calibration_examples: number of calibration images.
      line_width: fixed width of the CRNN's batch-1 TFLite/TensorRT models (default: the 95th
        percentile of the eval split's widths, rounded up to a multiple of 16).
      top_k: candidates returned by the serving signature.
      latency_runs: batch-1 runs timed per format (0: skip timing).
      throughput_batch: batch size of the throughput measurement.
      threads: CPU threads for TFLite and onnxruntime, and for TensorFlow under hccr-export
        (default: all cores).
      batch_size: examples per model call when evaluating a format.
      progress: progress lines on stderr.
      tta: test-time augmentation for the accuracy of every format and of the Keras model
        (classifiers; see hccr-eval --tta), so that the delta is the one hccr-eval and
        hccr-predict give with the same flag.
    """
    formats: Sequence[str] = DEFAULT_FORMATS
    eval_split: str | None = None
    eval_examples: int = 500
    calibration_split: str | None = None
    calibration_examples: int = 200
    line_width: int | None = None
    top_k: int = 5
    latency_runs: int = 30
    throughput_batch: int = 32
    threads: int | None = None
    batch_size: int = 64
    progress: bool = True
    tta: inference.TTAMode = "off"


class _Context:
    """What the exporters share: the model, its data, and lazily built intermediates."""

    def __init__(self, model, model_path, dataset, config: ExportConfig, work_dir):
        self.model, self.model_path, self.dataset = model, model_path, dataset
        self.config, self.work_dir = config, work_dir
        self.lines = dataset.task == "lines"
        self.info = ModelInfo.from_dataset(dataset, model.name,
                                           source=os.path.abspath(model_path))
        self.eval_split = config.eval_split or _pick_split(dataset, ("test", "validation"))
        self.calibration_split = config.calibration_split or _pick_split(
            dataset, ("train",), fallback=self.eval_split)
        self.line_width = config.line_width or (self._default_line_width() if self.lines
                                                else None)
        self._float = None
        self._fixed = None
        self._saved = {}

    def _default_line_width(self) -> int:
        widths = []
        for batch in evaluation.read_split(self.dataset, self.eval_split, batch_size=256,
                                           limit=1000):
            widths += [int(w) for w in batch["width"]]
        width = int(np.percentile(widths, 95)) if widths else 4 * self.info.image_height
        return max(16, -(-width // 16) * 16)

    @property
    def float_model(self):
        """The model in float32, any batch (and any width for lines)."""
        if self._float is None:
            self._float = float32_clone(self.model)
        return self._float

    @property
    def fixed_model(self):
        """The model for TFLite/TensorRT: the float one for classifiers; for lines the batch-1,
        fixed-width, unrolled variant."""
        if not self.lines:
            return self.float_model
        if self._fixed is None:
            h, _, c = self.model.input_shape[1:]
            self._fixed = float32_clone(self.model, input_shape=(h, self.line_width, c),
                                        batch_size=1, unroll=True)
        return self._fixed

    def logits_saved_model(self, fixed: bool) -> str:
        """Path of a SavedModel with only the logits signature (built once)."""
        key = "fixed" if fixed else "float"
        if key not in self._saved:
            model = self.fixed_model if fixed else self.float_model
            path = os.path.join(self.work_dir, f"logits_{key}")
            _logits_saved_model(model, path, [model.input_shape[0]] + list(model.input_shape[1:]))
            self._saved[key] = path
        return self._saved[key]

    def model_info(self, fmt: str, fixed: bool = False) -> ModelInfo:
        extra = {}
        width = self.info.image_width
        if self.lines and fixed:
            width = self.line_width
            extra = {"batch_size": 1, "wider_lines": "squeezed to image_width"}
        return dataclasses.replace(self.info, format=fmt, image_width=width, extra=extra)

    def write_companions(self, directory: str, fmt: str, fixed: bool = False) -> None:
        self.dataset.charset.save(os.path.join(directory, CHARSET_FILE))
        self.model_info(fmt, fixed).save(os.path.join(directory, MODEL_INFO_FILE))

    def calibration_batches(self, batch: int = 1) -> Iterator[np.ndarray]:
        """float32 model inputs from the calibration split, `batch` images at a time."""
        for data in evaluation.read_split(self.dataset, self.calibration_split,
                                          batch_size=batch,
                                          limit=self.config.calibration_examples):
            if self.lines:
                images = [im[:, :w] for im, w in zip(data["image"], data["width"])]
                images, _ = inference.pad_lines(images, self.line_width)
            else:
                images = data["image"]
            yield inference.to_model_input(images)

    def sample_input(self) -> np.ndarray:
        """One float32 input image of the eval split (the latency input)."""
        return next(self.calibration_batches(1))


def _pick_split(dataset, preferred, fallback=None) -> str:
    for name in preferred:
        if dataset.splits.get(name, {}).get("num_examples", 0):
            return name
    if fallback:
        return fallback
    nonempty = [s for s, v in sorted(dataset.splits.items()) if v.get("num_examples", 0)]
    if not nonempty:
        raise ValueError(f"{dataset.data_dir}: no split has examples")
    return nonempty[0]


def _export_saved_model(ctx: _Context, out: str) -> str:
    functions = make_serving_functions(ctx.float_model, ctx.info, ctx.dataset.charset.chars,
                                       ctx.config.top_k)
    _write_saved_model(functions, ctx.float_model, out)
    ctx.write_companions(out, "saved_model")
    return out


def _tflite(ctx: _Context, out: str, fmt: str) -> str:
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(ctx.logits_saved_model(fixed=True),
                                                         signature_keys=["logits"])
    if fmt != "tflite_float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "tflite_float16":
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite_int8":
        converter.representative_dataset = lambda: ([x] for x in ctx.calibration_batches(1))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(sys.stderr):
        flatbuffer = converter.convert()
    path = os.path.join(out, MODEL_FILES[fmt])
    with open(path, "wb") as f:
        f.write(flatbuffer)
    ctx.write_companions(out, fmt, fixed=True)
    return path


def _onnx_file(ctx: _Context, path: str) -> None:
    import tensorflow as tf
    import tf2onnx
    model = ctx.float_model
    spec = tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def logits(image):
        return {"logits": model(image, training=False)}

    with contextlib.redirect_stdout(sys.stderr):
        tf2onnx.convert.from_function(logits, input_signature=[spec], opset=ONNX_OPSET,
                                      output_path=path)


def _export_onnx(ctx: _Context, out: str) -> str:
    path = os.path.join(out, MODEL_FILES["onnx"])
    _onnx_file(ctx, path)
    ctx.write_companions(out, "onnx")
    return path


def _export_tftrt(ctx: _Context, out: str, precision: str) -> str:
    from trainers.serving import tensorrt
    tensorrt.check_tftrt()  # fail before building anything
    os.rmdir(out)  # the converter writes the directory itself
    tensorrt.convert_tftrt(ctx.logits_saved_model(fixed=False), out, precision,
                           calibration=lambda: ctx.calibration_batches(8))
    ctx.write_companions(out, f"tftrt_{precision}")
    return out


def _export_trt(ctx: _Context, out: str, precision: str) -> str:
    from trainers.serving import tensorrt
    tensorrt.check_engine_builder()
    onnx_path = os.path.join(ctx.work_dir, "for_tensorrt.onnx")
    if not os.path.exists(onnx_path):
        _onnx_file(ctx, onnx_path)
    h, _, c = ctx.model.input_shape[1:]
    width = ctx.line_width if ctx.lines else ctx.model.input_shape[2]
    path = os.path.join(out, MODEL_FILES[f"trt_{precision}"])
    tensorrt.build_engine(onnx_path, path, precision, input_shape=(h, width, c),
                          max_batch=max(1, ctx.config.throughput_batch),
                          calibration=lambda: ctx.calibration_batches(8))
    ctx.write_companions(out, f"trt_{precision}", fixed=ctx.lines)
    return path


EXPORTERS: dict[str, Callable[[_Context, str], str]] = {
    "saved_model": _export_saved_model,
    **{fmt: (lambda ctx, out, fmt=fmt: _tflite(ctx, out, fmt)) for fmt in TFLITE_FORMATS},
    "onnx": _export_onnx,
    "tftrt_fp16": lambda ctx, out: _export_tftrt(ctx, out, "fp16"),
    "tftrt_int8": lambda ctx, out: _export_tftrt(ctx, out, "int8"),
    "trt_fp16": lambda ctx, out: _export_trt(ctx, out, "fp16"),
    "trt_int8": lambda ctx, out: _export_trt(ctx, out, "int8"),
}


def _metric_name(task: str) -> str:
    return "top1_accuracy" if task == "chars" else "cer"


def _agreement(task, reference, predictions) -> float:
    if task == "chars":
        return float(np.mean(reference["top_k"][:, 0] == predictions["top_k"][:, 0]))
    pairs = list(zip(reference["greedy"], predictions["greedy"]))
    return float(np.mean([a == b for a, b in pairs])) if pairs else float("nan")


def _log(config: ExportConfig, message: str) -> None:
    if config.progress:
        print(message, file=sys.stderr, flush=True)


def export(model_path: str, data_dir: str, out_dir: str, config: ExportConfig | None = None
           ) -> dict:
    """Exports a `.keras` model to every requested format and writes `export_report.json`.

    Each format is evaluated on `config.eval_examples` examples of the eval split through the
    same code as `hccr-eval`, timed on CPU, and compared with the Keras model.

    Returns:
      The report: {"formats": {name: {"status": "ok" | "unavailable" | "failed", "path",
      "size_bytes", "latency_ms", "throughput_per_s", metric, "delta", "agreement", "error"}},
      "keras": {...the same for the source model...}, ...}.
    """
    import keras

    import models  # noqa: F401  (custom layers)
    config = config or ExportConfig()
    formats = parse_formats(config.formats)
    dataset = metadata.load(data_dir)
    inference.tta_views(config.tta)  # an unknown mode fails before anything is written
    if config.tta != "off" and dataset.task != "chars":
        raise ValueError(f"test-time augmentation (--tta {config.tta}) is for classifiers; "
                         f"{data_dir} holds task {dataset.task!r}")
    model = keras.models.load_model(model_path, compile=False)
    os.makedirs(out_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix=".work-", dir=out_dir)
    started = time.time()
    try:
        ctx = _Context(model, model_path, dataset, config, work_dir)
        metric = _metric_name(dataset.task)
        report = {"model": os.path.abspath(model_path), "model_name": model.name,
                  "task": dataset.task, "data_dir": os.path.abspath(data_dir),
                  "eval": {"split": ctx.eval_split, "examples": config.eval_examples,
                           "metric": metric, "tta": config.tta},
                  "calibration": {"split": ctx.calibration_split,
                                  "examples": config.calibration_examples},
                  "line_width": ctx.line_width, "threads": config.threads or os.cpu_count(),
                  "formats": {}}
        sample = ctx.sample_input() if config.latency_runs else None
        keras_runner = inference.KerasRunner(model)
        keras_runner.path = os.path.abspath(model_path)
        _log(config, f"[keras] evaluating {model_path}")
        baseline, reference = _measure(ctx, keras_runner, sample)
        baseline.update(status="ok", path=os.path.abspath(model_path),
                        size_bytes=os.path.getsize(model_path))
        report["keras"] = baseline
        for fmt in formats:
            _log(config, f"[{fmt}] exporting")
            entry = _export_one(ctx, fmt, out_dir, sample, baseline, reference)
            report["formats"][fmt] = entry
            _log(config, f"[{fmt}] {entry['status']}" +
                 (f": {entry['error']}" if entry.get("error") else ""))
        report["seconds"] = round(time.time() - started, 1)
        write_json_atomically(os.path.join(out_dir, REPORT_FILE), report)
        return report
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _measure(ctx: _Context, runner, sample) -> tuple[dict, dict | None]:
    config = ctx.config
    entry, predictions = {}, None
    if config.eval_examples:
        rep = evaluation.evaluate(runner, ctx.dataset.data_dir, ctx.eval_split,
                                  batch_size=config.batch_size,
                                  max_examples=config.eval_examples, progress=False,
                                  tta=config.tta, keep_predictions=True)
        predictions = rep.pop("_predictions")
        metrics = rep["metrics"]
        entry["metrics"] = ({k: metrics[k] for k in ("top1_accuracy", "top5_accuracy",
                                                     "weighted_f1")}
                            if ctx.dataset.task == "chars" else
                            {"cer": metrics["cer"], "line_accuracy": metrics["line_accuracy"],
                             "beam_cer": metrics["beam"]["cer"]})
        entry["eval_examples"] = rep["num_examples"]
    if config.latency_runs and sample is not None:
        # Lines: every format gets the same image, at the batch-1 models' fixed width.
        entry.update(measure_speed(runner, sample, runs=config.latency_runs,
                                   batch=config.throughput_batch))
    return entry, predictions


def _export_one(ctx: _Context, fmt: str, out_dir: str, sample, baseline, reference) -> dict:
    from trainers.serving import tensorrt
    final = os.path.join(out_dir, fmt)
    entry = {"status": "failed"}
    try:
        with atomic_dir(final) as tmp:
            rel = os.path.relpath(EXPORTERS[fmt](ctx, tmp), tmp)
        path = final if rel == "." else os.path.join(final, rel)
        entry.update(status="ok", path=path, size_bytes=path_size(path))
        runner = inference.load(path, threads=ctx.config.threads)
        if fmt == "onnx":
            entry["parity_max_abs_diff"] = _check_onnx(ctx, runner)
        measured, predictions = _measure(ctx, runner, sample)
        entry.update(measured)
        metric = _metric_name(ctx.dataset.task)
        if predictions is not None and reference is not None:
            entry["delta"] = entry["metrics"][metric] - baseline["metrics"][metric]
            entry["agreement"] = _agreement(ctx.dataset.task, reference, predictions)
        if "latency_ms" in entry and "latency_ms" in baseline:
            entry["speedup_vs_keras"] = round(baseline["latency_ms"] / entry["latency_ms"], 2)
    except tensorrt.MissingDependencyError as err:
        entry.update(status="unavailable", error=str(err))
    except Exception as err:  # one format's failure must not stop the others
        entry.update(status="failed" if entry["status"] != "ok" else "evaluation failed",
                     error=f"{type(err).__name__}: {err}",
                     traceback=traceback.format_exc(limit=6))
    return entry


def _check_onnx(ctx: _Context, runner) -> float:
    """Max |onnxruntime - Keras| over a few eval images; raises beyond ONNX_TOLERANCE."""
    batches = evaluation.read_split(ctx.dataset, ctx.eval_split, batch_size=8, limit=8)
    data = next(batches)
    if ctx.lines:
        images = [im[:, :w] for im, w in zip(data["image"], data["width"])]
        x = inference.to_model_input(inference.pad_lines(images)[0])
    else:
        x = inference.to_model_input(data["image"])
    expected = np.asarray(ctx.float_model(x, training=False), dtype=np.float32)
    got = runner.predict(x)
    diff = float(np.max(np.abs(got - expected)))
    limit = ONNX_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
    if not diff <= limit:
        raise ValueError(f"onnxruntime differs from Keras by {diff:.3g} (limit {limit:.3g})")
    return diff


def summary_table(report: dict) -> str:
    """The report as a Markdown table (what hccr-export prints and the benchmark writes)."""
    metric = report["eval"]["metric"]
    heading = metric
    if report["eval"].get("tta", "off") != "off":
        heading += f", tta {report['eval']['tta']}"
    scale, unit = 100.0, "%"
    rows = [("keras", report["keras"])] + list(report["formats"].items())
    lines = [f"| format | status | size (KB) | latency b1 (ms) | throughput (img/s) | "
             f"{heading} ({unit}) | delta (points) | agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in rows:
        m = e.get("metrics", {}).get(metric)
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            name, e.get("status", ""),
            f"{e['size_bytes'] / 1024:,.0f}" if "size_bytes" in e else "",
            e.get("latency_ms", ""), e.get("throughput_per_s", ""),
            f"{scale * m:.2f}" if m is not None else "",
            f"{scale * e['delta']:+.2f}" if "delta" in e else "",
            f"{100 * e['agreement']:.1f}%" if "agreement" in e else ""))
    return "\n".join(lines)
