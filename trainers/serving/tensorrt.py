"""TensorRT: TF-TRT conversion of a SavedModel, and an ONNX -> TensorRT engine builder.

Two routes, each in FP16 or INT8 (with calibration on images from the shards):

- TF-TRT (`tf.experimental.tensorrt` / `trt_convert.TrtGraphConverterV2`): needs a TensorFlow
  built with TensorRT (the CUDA build of TF 2.17, `tensorflow[and-cuda]==2.17.1`, with the
  TensorRT 8.6 libraries on the library path) and an NVIDIA GPU. CPU wheels and every pip wheel
  from TF 2.18 on have no TensorRT.
- ONNX -> engine (the `tensorrt` Python API): needs the `tensorrt` package, `cuda-python` (for
  device buffers: INT8 calibration and running engines) and an NVIDIA GPU.

Where something is missing, every entry point raises `MissingDependencyError` naming what is
needed, before doing any work; `hccr-export` records that for the stage and exports the other
formats. Nothing here is imported unless a TensorRT stage is asked for.

Running an engine is `trainers.serving.inference.EngineRunner`, beside the runners of the other
formats; it uses the checks and `cuda_call` from here (this module imports nothing of
`trainers`).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np

TFTRT_NEEDS = ("TF-TRT needs TensorFlow built with TensorRT support and an NVIDIA GPU: install "
               "the CUDA build `tensorflow[and-cuda]==2.17.1` (Linux x86-64; TF 2.17 is the last "
               "release whose pip wheels include TF-TRT) with the TensorRT 8.6 libraries "
               "(libnvinfer.so.8) on LD_LIBRARY_PATH")
ENGINE_NEEDS = ("TensorRT engines (building and running) need the `tensorrt` Python package "
                "(pip install tensorrt, matching the installed CUDA), `cuda-python` "
                "(pip install cuda-python) and an NVIDIA GPU with its driver")
PRECISIONS = ("fp16", "int8")


class MissingDependencyError(RuntimeError):
    """TensorRT, its Python API, a TensorRT-enabled TensorFlow or a GPU is missing."""


def _gpu_names() -> list[str]:
    """NVIDIA GPUs visible to the driver (without initialising CUDA in this process)."""
    names = []
    if os.path.isdir("/proc/driver/nvidia/gpus"):
        names = sorted(os.listdir("/proc/driver/nvidia/gpus"))
    return names


def check_tftrt() -> None:
    """Raises MissingDependencyError unless TF-TRT can run here."""
    import tensorflow as tf
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils
        enabled = bool(_pywrap_py_utils.is_tensorrt_enabled())
    except ImportError:
        enabled = False
    missing = []
    if not enabled:
        missing.append(f"this TensorFlow ({tf.__version__}"
                       f"{', CPU-only build' if not tf.test.is_built_with_cuda() else ''}) "
                       f"was not built with TensorRT")
    if not tf.config.list_physical_devices("GPU"):
        missing.append("TensorFlow sees no GPU")
    if missing:
        raise MissingDependencyError(f"{TFTRT_NEEDS}. Here: {'; '.join(missing)}.")


def check_engine_builder() -> None:
    """Raises MissingDependencyError unless the `tensorrt` API, cuda-python and a GPU exist."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the `tensorrt` Python package is not installed")
    try:
        from cuda import cudart  # noqa: F401
    except ImportError:
        missing.append("`cuda-python` is not installed")
    if not _gpu_names():
        missing.append("no NVIDIA GPU or driver (/proc/driver/nvidia/gpus is absent or empty)")
    if missing:
        raise MissingDependencyError(f"{ENGINE_NEEDS}. Here: {'; '.join(missing)}.")


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}. Received: {precision!r}")
    return precision


# === TF-TRT ===


def convert_tftrt(saved_model_dir: str, output_dir: str, precision: str,
                  calibration: Callable[[], Iterable[np.ndarray]] | None = None,
                  signature_key: str = "logits") -> None:
    """Converts a SavedModel with TF-TRT and saves the result (a SavedModel).

    Args:
      saved_model_dir: a SavedModel whose `signature_key` maps float32 images to logits.
      output_dir: where to write the converted SavedModel.
      precision: "fp16" or "int8".
      calibration: for INT8, a callable returning float32 batches (N, H, W, 1).
    """
    _check_precision(precision)
    check_tftrt()
    from tensorflow.python.compiler.tensorrt import trt_convert as trt
    mode = trt.TrtPrecisionMode.FP16 if precision == "fp16" else trt.TrtPrecisionMode.INT8
    converter = trt.TrtGraphConverterV2(
        input_saved_model_dir=saved_model_dir, input_saved_model_signature_key=signature_key,
        precision_mode=mode, use_calibration=precision == "int8")
    if precision == "int8":
        if calibration is None:
            raise ValueError("INT8 TF-TRT conversion needs calibration data")
        converter.convert(calibration_input_fn=lambda: ((b,) for b in calibration()))
    else:
        converter.convert()
    converter.save(output_dir)


# === ONNX -> TensorRT engine ===


def cuda_call(result):
    """The value of a cuda-python `cudart` call, which returns `(error, *values)`; raises on an
    error."""
    from cuda import cudart
    err, *rest = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def build_engine(onnx_path: str, engine_path: str, precision: str, *,
                 input_shape: tuple, max_batch: int = 32,
                 calibration: Callable[[], Iterable[np.ndarray]] | None = None,
                 workspace_bytes: int = 1 << 30) -> None:
    """Builds a serialized TensorRT engine from an ONNX model.

    Args:
      onnx_path: the ONNX model (float32 input `(batch, H, W, 1)`).
      engine_path: where to write the engine (`.engine`).
      precision: "fp16" or "int8" (INT8 needs `calibration`; FP16 is enabled too, for layers
        TensorRT keeps out of INT8).
      input_shape: `(H, W, 1)` of the optimisation profile (W fixed for line models).
      max_batch: largest batch of the optimisation profile (min 1, optimum max_batch // 2).
      calibration: callable returning float32 batches of shape (N, H, W, 1), N <= max_batch.
    """
    _check_precision(precision)
    check_engine_builder()
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.set_flag(trt.BuilderFlag.FP16)
    name = network.get_input(0).name
    profile = builder.create_optimization_profile()
    h, w, c = input_shape
    profile.set_shape(name, (1, h, w, c), (max(1, max_batch // 2), h, w, c),
                      (max_batch, h, w, c))
    config.add_optimization_profile(profile)
    calibrator = None
    if precision == "int8":
        if calibration is None:
            raise ValueError("INT8 engine building needs calibration data")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, calibration, os.path.splitext(engine_path)[0] +
                                      ".calibration.cache")
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    with open(engine_path, "wb") as f:
        f.write(serialized)


def _make_calibrator(trt, calibration, cache_path):
    from cuda import cudart

    class Calibrator(trt.IInt8EntropyCalibrator2):
        """Feeds calibration batches through one device buffer."""

        def __init__(self):
            super().__init__()
            self._batches = iter(calibration())
            self._buffer = None
            self._size = 0
            self._batch = 1

        def get_batch_size(self):
            return self._batch

        def get_batch(self, names):
            try:
                batch = np.ascontiguousarray(next(self._batches), dtype=np.float32)
            except StopIteration:
                return None
            self._batch = len(batch)
            if batch.nbytes > self._size:
                if self._buffer is not None:
                    cuda_call(cudart.cudaFree(self._buffer))
                self._buffer = cuda_call(cudart.cudaMalloc(batch.nbytes))
                self._size = batch.nbytes
            cuda_call(cudart.cudaMemcpy(self._buffer, batch.ctypes.data, batch.nbytes,
                                        cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self._buffer)]

        def read_calibration_cache(self):
            if os.path.exists(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            with open(cache_path, "wb") as f:
                f.write(cache)

    return Calibrator()
