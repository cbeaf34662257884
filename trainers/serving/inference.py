"""One loader and runner for every model format: `.keras`, SavedModel, TFLite, ONNX, TensorRT.

    runner = inference.load("export/tflite_int8/model.tflite")
    logits = runner.predict(inference.to_model_input(images_uint8))

Every runner maps a float32 batch `(N, H, W, 1)` (ink 1.0, background 0.0, the training input)
to float32 logits: `(N, num_classes)` for a classifier, `(N, W // 4, num_classes + 1)` for a
CRNN. Quantized TFLite models are fed and read through their own scale and zero point, so
callers never see int8. Evaluation, export and prediction all go through `load`, so an exported
model is judged exactly like the trained one.

Exported models describe themselves: every export directory holds `charset.txt` and
`model_info.json` (task, model name, image size, normalization) next to the model file;
`find_companion` finds them for any model path, including a `.keras` file in a training workdir.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Literal, Sequence, get_args

import numpy as np

from beam_preprocess.contract import imaging
from beam_preprocess.contract.charset import Charset

MODEL_INFO_FILE = "model_info.json"
CHARSET_FILE = "charset.txt"
FORMATS = ("keras", "saved_model", "tflite", "onnx", "tensorrt")
# The SavedModel signature that maps the training input to logits (serving_default takes raw
# images; see trainers/serving/export.py).
LOGITS_SIGNATURE = "logits"


class ModelFormatError(ValueError):
    """The path is not a model in a format this module reads."""


# === Model info ===


@dataclasses.dataclass
class ModelInfo:
    """What an exported model needs besides its weights: written as `model_info.json`.

    Attributes:
      task: "chars" (classifier) or "lines" (CRNN + CTC).
      model_name: the `models.build_model` preset name (or the Keras model's name).
      image_height: input height; also the normalized character size or line height.
      image_width: input width of a classifier; for lines None, or the fixed width of a
        batch-1 TFLite/TensorRT line model (wider lines are squeezed to it).
      num_classes: charset size (a CRNN has one more output: the CTC blank, class 0).
      margin, ink_threshold: `beam_preprocess.contract.imaging` normalization parameters.
      format: the export format name ("keras", "saved_model", "tflite_int8", ...).
      source: the model file it was exported from.
    """
    task: str
    model_name: str
    image_height: int
    image_width: int | None
    num_classes: int
    margin: int = imaging.DEFAULT_MARGIN
    ink_threshold: int = imaging.INK_THRESHOLD
    format: str = "keras"
    source: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, indent=1, sort_keys=True)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str) -> "ModelInfo":
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_dataset(cls, dataset_info, model_name: str, **changes) -> "ModelInfo":
        """Model info for a model trained on a preprocessed directory (`metadata.load`)."""
        raw = dataset_info.raw
        info = cls(task=dataset_info.task, model_name=model_name,
                   image_height=int(dataset_info.image_height),
                   image_width=(None if dataset_info.image_width is None
                                else int(dataset_info.image_width)),
                   num_classes=dataset_info.num_classes,
                   margin=int(raw.get("image_margin", imaging.DEFAULT_MARGIN)),
                   ink_threshold=int(raw.get("ink_threshold", imaging.INK_THRESHOLD)))
        return dataclasses.replace(info, **changes)


def model_dir(path: str) -> str:
    """The directory that holds a model's companion files (the SavedModel itself, or the
    directory of a model file)."""
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)


def find_companion(path: str, name: str) -> str | None:
    """`charset.txt` or `model_info.json` next to a model, or None.

    Looks in the model's directory, then (for a SavedModel) its parent, so both an export
    directory and a trainer's workdir (`<workdir>/best.keras` next to `charset.txt`) work.
    """
    directory = model_dir(path)
    for candidate in (os.path.join(directory, name),
                      os.path.join(os.path.dirname(directory), name)):
        if os.path.isfile(candidate):
            return candidate
    return None


def resolve_model_info(model_path: str, data_dir: str | None = None, runner=None
                       ) -> tuple[ModelInfo, Charset]:
    """The task, image size, normalization and charset of a model.

    Sources, first match wins: `--data DIR` (metadata.json + charset.txt of the preprocessed
    directory), then `model_info.json` and `charset.txt` next to the model. With only a charset
    next to the model, the task and size come from the model itself (`runner`).

    Raises:
      FileNotFoundError: no charset can be found (naming where it was looked for).
    """
    if data_dir:
        from beam_preprocess.contract import metadata
        dataset = metadata.load(data_dir)
        name = runner.name if runner is not None else os.path.basename(model_path)
        info_path = find_companion(model_path, MODEL_INFO_FILE)
        if info_path:
            name = ModelInfo.load(info_path).model_name
        info = ModelInfo.from_dataset(dataset, name, source=model_path,
                                      format=runner.format if runner is not None else "")
        if runner is not None and info.task == "lines" and runner.input_width is not None:
            info.image_width = runner.input_width
        return info, dataset.charset
    charset_path = find_companion(model_path, CHARSET_FILE)
    if charset_path is None:
        raise FileNotFoundError(
            f"no charset for {model_path}: pass --data DIR (the preprocessed directory), or keep "
            f"{CHARSET_FILE} next to the model (hccr-export writes it into every export directory)")
    charset = Charset.load(charset_path)
    info_path = find_companion(model_path, MODEL_INFO_FILE)
    if info_path:
        return ModelInfo.load(info_path), charset
    if runner is None:
        runner = load(model_path)
    task = "lines" if runner.sequence else "chars"
    info = ModelInfo(task=task, model_name=runner.name, image_height=runner.input_height,
                     image_width=runner.input_width, num_classes=len(charset),
                     format=runner.format, source=model_path)
    return info, charset


# === Input preparation ===


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 images `(N, H, W)` with background 255 -> the float32 model input `(N, H, W, 1)`
    with ink 1.0 and background 0.0 (what the training pipeline computes)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images (N, H, W). Received dtype {images.dtype}, "
                         f"shape {images.shape}")
    return (1.0 - images.astype(np.float32) / 255.0)[..., None]


def fit_width(image: np.ndarray, width: int) -> np.ndarray:
    """A uint8 line image at exactly `width` columns: padded on the right with background (255),
    or, when wider, squeezed horizontally (bilinear) to fit a fixed-width model."""
    h, w = image.shape
    if w == width:
        return image
    if w < width:
        out = np.full((h, width), 255, dtype=np.uint8)
        out[:, :w] = image
        return out
    from PIL import Image
    return np.asarray(Image.fromarray(image).resize((width, h), Image.BILINEAR))


def pad_lines(images: Sequence[np.ndarray], width: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Line images of different widths as one uint8 batch and their (fitted) widths.

    Args:
      images: uint8 (height, width_i) line images, background 255.
      width: a fixed model width (see `fit_width`), or None to pad to the widest image.

    Returns:
      (batch (N, H, W) uint8 padded with 255, widths (N,) of the content in the batch).
    """
    if width is not None:
        batch = np.stack([fit_width(image, width) for image in images])
        widths = np.array([min(image.shape[1], width) for image in images], dtype=np.int64)
        return batch, widths
    widths = np.array([image.shape[1] for image in images], dtype=np.int64)
    batch = np.full((len(images), images[0].shape[0], int(widths.max())), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        batch[i, :, :image.shape[1]] = image
    return batch, widths


def time_steps(widths: np.ndarray, num_steps: int) -> np.ndarray:
    """CTC logit lengths of padded lines: `width // 4`, within the model's output length."""
    from models.crnn import CRNN_WIDTH_DOWNSAMPLE
    return np.clip(np.asarray(widths) // CRNN_WIDTH_DOWNSAMPLE, 1, num_steps).astype(np.int32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# === Runners ===


class Runner:
    """Runs one model on float32 batches. Subclasses set the attributes below.

    Attributes:
      format: "keras", "saved_model", "tflite", "onnx" or "tensorrt".
      path: the model path.
      name: the model's name (Keras name, or the file stem).
      input_height, input_width: the model's input size (width None: any width).
      fixed_batch: the one batch size the model accepts (1 for the CRNN TFLite variant), or
        None for any batch size.
      sequence: True for a CTC line model (3-D logits).
    """
    format = ""
    path = ""
    name = ""
    input_height: int | None = None
    input_width: int | None = None
    fixed_batch: int | None = None
    sequence = False

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 `(N, H, W, 1)` -> float32 logits; batches larger than `fixed_batch` are
        run in pieces."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fixed_batch is None or len(x) == self.fixed_batch:
            return self._run(x)
        step = self.fixed_batch
        outs = []
        for start in range(0, len(x), step):
            piece = x[start:start + step]
            n = len(piece)
            if n < step:  # pad the last piece with blank images
                piece = np.concatenate([piece, np.zeros((step - n,) + piece.shape[1:],
                                                        np.float32)])
            outs.append(self._run(piece)[:n])
        return np.concatenate(outs)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"format": self.format, "path": self.path, "name": self.name,
                "input_height": self.input_height, "input_width": self.input_width,
                "fixed_batch": self.fixed_batch, "sequence": self.sequence}


class KerasRunner(Runner):
    """A `.keras` file (or an in-memory `keras.Model`), called through one `tf.function`."""
    format = "keras"

    def __init__(self, path_or_model):
        import keras
        import tensorflow as tf

        import models  # noqa: F401  (registers the custom layers for deserialization)
        if isinstance(path_or_model, keras.Model):
            self.model, self.path = path_or_model, ""
        else:
            self.path = os.fspath(path_or_model)
            self.model = _load_keras_archive(self.path)
        self.name = self.model.name
        shape = self.model.input_shape
        self.input_height, self.input_width = shape[1], shape[2]
        self.fixed_batch = shape[0]
        self.sequence = len(self.model.output_shape) == 3
        self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def _run(self, x):
        return np.asarray(self._fn(x), dtype=np.float32)


def _load_keras_archive(path: str):
    """`keras.models.load_model` with one-line errors: Keras reports a `.keras` file that is
    not a zip archive as "File not found"."""
    import zipfile

    import keras
    if not zipfile.is_zipfile(path):
        raise ModelFormatError(f"{path}: not a Keras archive (a .keras file is the zip archive "
                               f"model.save writes); the file is damaged or is another format")
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, KeyError, OSError, TypeError, zipfile.BadZipFile) as err:
        raise ModelFormatError(f"{path}: Keras cannot load this archive: "
                               f"{' '.join(str(err).split())}") from err


class SavedModelRunner(Runner):
    """A SavedModel written by `hccr-export`, run through its `logits` signature."""
    format = "saved_model"

    def __init__(self, path: str):
        import tensorflow as tf
        self.path = path
        try:
            self._loaded = tf.saved_model.load(path)
        except Exception as err:  # e.g. TF-TRT ops on a TensorFlow without TensorRT
            raise ModelFormatError(f"{path}: TensorFlow cannot load this SavedModel: {err}") \
                from err
        signatures = self._loaded.signatures
        if LOGITS_SIGNATURE in signatures:
            self._fn = signatures[LOGITS_SIGNATURE]
        elif len(signatures) == 1:
            self._fn = next(iter(signatures.values()))
        else:
            raise ModelFormatError(f"{path}: no {LOGITS_SIGNATURE!r} signature (it has "
                                   f"{sorted(signatures)}); export it with hccr-export")
        _, kwargs = self._fn.structured_input_signature
        if len(kwargs) != 1:
            raise ModelFormatError(f"{path}: the {LOGITS_SIGNATURE!r} signature must take one "
                                   f"input. Received: {sorted(kwargs)}")
        (self._input_name, spec), = kwargs.items()
        if spec.dtype != tf.float32 or spec.shape.rank != 4:
            raise ModelFormatError(f"{path}: signature input {self._input_name!r} is {spec}; "
                                   f"expected float32 (batch, height, width, 1)")
        self.fixed_batch, self.input_height, self.input_width, _ = spec.shape.as_list()
        (self._output_name, out_spec), = self._fn.structured_outputs.items()
        self.sequence = out_spec.shape.rank == 3
        self.name = _read_name(path) or os.path.basename(os.path.normpath(path))
        self._tf = tf

    def _run(self, x):
        out = self._fn(**{self._input_name: self._tf.constant(x)})[self._output_name]
        return np.asarray(out, dtype=np.float32)


class TFLiteRunner(Runner):
    """A `.tflite` file through LiteRT's interpreter; int8 inputs/outputs are (de)quantized."""
    format = "tflite"

    def __init__(self, path: str, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter
        self.path = path
        try:
            self._interpreter = Interpreter(model_path=path,
                                            num_threads=threads or os.cpu_count())
        except ValueError as err:  # LiteRT: "The model is not a valid Flatbuffer buffer"
            raise ModelFormatError(f"{path}: not a TFLite model LiteRT can read: "
                                   f"{' '.join(str(err).split())}") from err
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError(f"{path}: expected one input and one output. Received "
                                   f"{len(inputs)} inputs, {len(outputs)} outputs")
        self._in, self._out = inputs[0], outputs[0]
        signature = self._in["shape_signature"]
        if len(signature) != 4:
            raise ModelFormatError(f"{path}: input shape {list(signature)} is not "
                                   f"(batch, height, width, 1)")
        self.fixed_batch = None if signature[0] == -1 else int(signature[0])
        self.input_height = int(signature[1])
        self.input_width = None if signature[2] == -1 else int(signature[2])
        self.sequence = len(self._out["shape_signature"]) == 3
        self.name = _read_name(path) or os.path.splitext(os.path.basename(path))[0]
        self.input_dtype = np.dtype(self._in["dtype"])
        self._shape = None
        self._interpreter.allocate_tensors()

    def _run(self, x):
        interpreter = self._interpreter
        if self._shape != x.shape:
            interpreter.resize_tensor_input(self._in["index"], list(x.shape))
            interpreter.allocate_tensors()
            self._shape = x.shape
        scale, zero = self._in["quantization"]
        if self.input_dtype != np.float32:
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input_dtype)
        interpreter.set_tensor(self._in["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(self._out["index"])
        scale, zero = self._out["quantization"]
        if y.dtype != np.float32:
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


class OnnxRunner(Runner):
    """An `.onnx` file through onnxruntime (CPU)."""
    format = "onnx"

    def __init__(self, path: str, threads: int | None = None):
        import onnxruntime as ort
        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
        try:
            self._session = ort.InferenceSession(path, options,
                                                 providers=["CPUExecutionProvider"])
        except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail) as err:
            raise ModelFormatError(f"{path}: not an ONNX model onnxruntime can load: "
                                   f"{' '.join(str(err).split())}") from err
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelFormatError(f"{path}: expected one input. Received {len(inputs)}")
        self._input_name = inputs[0].name
        dims = [d if isinstance(d, int) else None for d in inputs[0].shape]
        if len(dims) != 4:
            raise ModelFormatError(f"{path}: input shape {inputs[0].shape} is not "
                                   f"(batch, height, width, 1)")
        self.fixed_batch, self.input_height, self.input_width, _ = dims
        self.sequence = len(self._session.get_outputs()[0].shape) == 3
        self.name = _read_name(path) or os.path.splitext(os.path.basename(path))[0]

    def _run(self, x):
        return np.asarray(self._session.run(None, {self._input_name: x})[0], dtype=np.float32)


class EngineRunner(Runner):
    """A serialized TensorRT engine (one input, one output) on float32 batches (GPU; the
    checks and CUDA helpers are in `trainers.serving.tensorrt`)."""
    format = "tensorrt"

    def __init__(self, path: str):
        from trainers.serving.tensorrt import check_engine_builder, cuda_call
        check_engine_builder()
        import tensorrt as trt
        from cuda import cudart
        self.path = path
        self._trt, self._cudart = trt, cudart
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(path, "rb") as f:
            self._engine = runtime.deserialize_cuda_engine(f.read())
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names
                  if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeError(f"{path}: expected one input and one output tensor")
        self._input, self._output = inputs[0], outputs[0]
        shape = list(self._engine.get_tensor_shape(self._input))
        self.input_height = int(shape[1])
        self.input_width = None if shape[2] < 0 else int(shape[2])
        self.fixed_batch = None if shape[0] < 0 else int(shape[0])
        self.sequence = len(self._engine.get_tensor_shape(self._output)) == 3
        info_path = find_companion(path, MODEL_INFO_FILE)
        self.name = (ModelInfo.load(info_path).model_name if info_path
                     else os.path.splitext(os.path.basename(path))[0])
        self._stream = cuda_call(cudart.cudaStreamCreate())

    def _run(self, x: np.ndarray) -> np.ndarray:
        from trainers.serving.tensorrt import cuda_call
        cudart = self._cudart
        self._context.set_input_shape(self._input, x.shape)
        out_shape = tuple(self._context.get_tensor_shape(self._output))
        y = np.empty(out_shape, dtype=np.float32)
        d_in = cuda_call(cudart.cudaMalloc(x.nbytes))
        d_out = cuda_call(cudart.cudaMalloc(y.nbytes))
        try:
            cuda_call(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                             self._stream))
            self._context.set_tensor_address(self._input, int(d_in))
            self._context.set_tensor_address(self._output, int(d_out))
            if not self._context.execute_async_v3(self._stream):
                raise RuntimeError(f"TensorRT failed to run {self.path}")
            cuda_call(cudart.cudaMemcpyAsync(y.ctypes.data, d_out, y.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                             self._stream))
            cuda_call(cudart.cudaStreamSynchronize(self._stream))
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return y


def _read_name(path: str) -> str | None:
    info_path = find_companion(path, MODEL_INFO_FILE)
    if info_path:
        try:
            return ModelInfo.load(info_path).model_name
        except (OSError, ValueError, TypeError):
            return None
    return None


def detect_format(path: str) -> str:
    """The format of a model path, from its name and contents."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "saved_model"
        raise ModelFormatError(f"{path} is a directory without saved_model.pb (not a SavedModel)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"model {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    by_ext = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx", ".engine": "tensorrt",
              ".plan": "tensorrt", ".trt": "tensorrt"}
    if ext in by_ext:
        return by_ext[ext]
    raise ModelFormatError(f"{path}: unknown model format; expected a .keras file, a SavedModel "
                           f"directory, a .tflite, .onnx, or TensorRT .engine/.plan file")


def load(path, *, threads: int | None = None) -> Runner:
    """Loads a model of any supported format (see `detect_format`) as a `Runner`.

    Args:
      path: a `.keras` file, SavedModel directory, `.tflite`, `.onnx` or TensorRT engine, or an
        in-memory `keras.Model`.
      threads: CPU threads for TFLite and onnxruntime (default: all cores). TensorFlow's own
        thread pools are process-wide: set them with `configure_tf_threads` before TF runs.
    """
    if not isinstance(path, (str, os.PathLike)):
        return KerasRunner(path)
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "keras":
        return KerasRunner(path)
    if fmt == "saved_model":
        return SavedModelRunner(path)
    if fmt == "tflite":
        return TFLiteRunner(path, threads)
    if fmt == "onnx":
        return OnnxRunner(path, threads)
    return EngineRunner(path)


def configure_tf_threads(threads: int | None) -> None:
    """Sets TensorFlow's intra/inter-op thread pools (only before TensorFlow runs any op)."""
    if not threads:
        return
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already initialized: keep its pools
        pass


# === Test-time augmentation ===

# The views a classifier is averaged over. Measured on writers outside the CASIA sample
# (docs/benchmarks.md, "Test-time augmentation as a feature"): over four models of the
# casia-sample recipe, both together ("all") gained 0.08-0.38 point (mean 0.19) at 7x the
# inference; shifts alone or scalings alone were as likely to lose as to gain. Two-pixel and
# diagonal shifts, larger scalings and small rotations added nothing.
TTA_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))
TTA_SCALES = (0.92, 1.08)
TTAMode = Literal["off", "shift", "scale", "all"]  # the type of every `tta` option
TTA_MODES: tuple[str, ...] = get_args(TTAMode)


def tta_views(mode: str) -> list[tuple[str, object]]:
    """The views of a TTA mode: ("identity", None), ("shift", (dy, dx)), ("scale", factor)."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; expected one of "
                         f"{', '.join(TTA_MODES)}")
    views: list[tuple[str, object]] = [("identity", None)]
    if mode in ("shift", "all"):
        views += [("shift", offset) for offset in TTA_SHIFTS]
    if mode in ("scale", "all"):
        views += [("scale", factor) for factor in TTA_SCALES]
    return views


def shift_images(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Model inputs `(N, H, W, C)` moved `dy` rows down and `dx` columns right; what comes in
    at the edge is background (0.0)."""
    n, h, w, c = x.shape
    out = np.zeros_like(x)
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """`(size_out, size_in)` weights of an antialiased bilinear (triangle) resize: the filter
    widens by the reduction factor when shrinking, as PIL's and TensorFlow's antialias do."""
    ratio = size_in / size_out
    support = max(ratio, 1.0)
    centers = (np.arange(size_out) + 0.5) * ratio
    positions = np.arange(size_in) + 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(positions[None, :] - centers[:, None]) / support)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def scale_images(x: np.ndarray, factor: float) -> np.ndarray:
    """Model inputs `(N, H, W, C)` scaled by `factor` about their centre, at the same size:
    shrunk onto background (0.0), or enlarged and cropped."""
    n, h, w, c = x.shape
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    resized = np.einsum("ah,nhwc,bw->nabc", _resize_matrix(h, new_h), x,
                        _resize_matrix(w, new_w), optimize=True).astype(x.dtype)
    if new_h <= h and new_w <= w:
        out = np.zeros_like(x)
        top, left = (h - new_h) // 2, (w - new_w) // 2
        out[:, top:top + new_h, left:left + new_w] = resized
        return out
    top, left = (new_h - h) // 2, (new_w - w) // 2
    return resized[:, top:top + h, left:left + w]


def view_images(x: np.ndarray, view: tuple[str, object]) -> np.ndarray:
    kind, arg = view
    if kind == "shift":
        return shift_images(x, *arg)
    if kind == "scale":
        return scale_images(x, arg)
    return x


class TTARunner(Runner):
    """A classifier runner averaged over augmented views of each input (test-time
    augmentation): the softmax probabilities of the views are averaged, and their log is
    returned as the logits, so that `softmax` of the output gives the averaged probabilities.

    Works over any format (the views are made in numpy before the model runs), so an INT8
    TFLite export is augmented exactly like its Keras model.
    """

    def __init__(self, inner: Runner, mode: str = "all"):
        if inner.sequence:
            raise ValueError(f"{inner.path or inner.name} is a CTC line model; test-time "
                             f"augmentation (shifts and scalings of one character) is for "
                             f"classifiers")
        self.views = tta_views(mode)
        self.inner, self.mode = inner, mode
        self.format, self.path, self.name = inner.format, inner.path, inner.name
        self.input_height, self.input_width = inner.input_height, inner.input_width
        self.fixed_batch = None  # the inner runner splits its own batches

    def _run(self, x):
        mean = np.zeros((), np.float64)
        for view in self.views:
            mean = mean + softmax(self.inner.predict(view_images(x, view)).astype(np.float64))
        mean /= len(self.views)
        return np.log(np.maximum(mean, 1e-30)).astype(np.float32)

    def describe(self) -> dict:
        return {**self.inner.describe(), "tta": self.mode, "tta_views": len(self.views)}


def with_tta(runner: Runner, mode: str) -> Runner:
    """`runner` averaged over the views of `mode` (see `TTA_MODES`); itself for "off"
    (`TTARunner` refuses an unknown mode)."""
    return runner if mode == "off" else TTARunner(runner, mode)


# === Running on images ===


def classify(runner: Runner, images: np.ndarray) -> np.ndarray:
    """uint8 `(N, H, W)` normalized character images -> float32 logits `(N, num_classes)`."""
    return runner.predict(to_model_input(images))


def recognize_lines(runner: Runner, images: Sequence[np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Normalized uint8 line images (any widths) -> (logits (N, T, C), logit lengths (N,)).

    Lines are padded to the widest one, or fitted to the model's fixed width.
    """
    batch, widths = pad_lines(images, runner.input_width)
    logits = runner.predict(to_model_input(batch))
    return logits, time_steps(widths, logits.shape[1])
