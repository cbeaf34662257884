"""Prediction on files: images (PNG/JPEG/...), CASIA GNT and DGRL, with any model format.

    predictor = Predictor("export/tflite_int8/model.tflite")
    for result in predictor.predict_files(["a.png", "b.gnt"]):
        print(result["prediction"], result["confidence"])

Inputs are raw bitmaps (dark ink on a light background, any size). Each is normalized exactly
like the Beam job normalizes training data (`beam_preprocess.imaging.normalize_char` for a
classifier, `normalize_line` for a line model), with the size, margin and ink threshold of the
model (from `--data DIR`'s metadata, or the `model_info.json` that hccr-export writes next to
every exported model).

The charset comes from `--data DIR`, or from `charset.txt` next to the model (every export
directory has one; the trainer keeps one in its workdir next to `best.keras`).

Every GNT sample and every DGRL text line is one input; their stored labels are reported as
`truth`, so a CASIA file doubles as a quick accuracy check.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Iterator, Sequence

import numpy as np

from beam_preprocess import imaging
from trainers import inference

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CASIA_EXTENSIONS = (".gnt", ".dgrl")


@dataclasses.dataclass
class Item:
    """One input bitmap: its source ("file" or "file:index"), pixels, and label if known."""
    source: str
    image: np.ndarray
    truth: str | None = None


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Files as given, directories expanded to their supported files (sorted, recursive).

    Raises:
      FileNotFoundError: a path does not exist.
      ValueError: a file has an unsupported extension.
    """
    out = []
    supported = IMAGE_EXTENSIONS + CASIA_EXTENSIONS
    for path in paths:
        if os.path.isdir(path):
            for root, _, files in sorted(os.walk(path)):
                out += [os.path.join(root, f) for f in sorted(files)
                        if f.lower().endswith(supported)]
        elif os.path.exists(path):
            if not path.lower().endswith(supported):
                raise ValueError(f"{path}: unsupported input; expected an image "
                                 f"({', '.join(IMAGE_EXTENSIONS)}), .gnt or .dgrl file")
            out.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return out


def read_image(path: str) -> np.ndarray:
    """An image file as a uint8 grayscale bitmap (transparent pixels become background)."""
    from PIL import Image
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return np.asarray(image.convert("L"), dtype=np.uint8)


def iter_items(paths: Sequence[str]) -> Iterator[Item]:
    """The bitmaps of image, GNT and DGRL files, in order."""
    from beam_preprocess.dgrl import read_dgrl
    from beam_preprocess.gnt import read_gnt
    for path in expand_paths(paths):
        lower = path.lower()
        if lower.endswith(".gnt"):
            for sample in read_gnt(path):
                yield Item(f"{path}:{sample.index}", sample.image, sample.char)
        elif lower.endswith(".dgrl"):
            for line in read_dgrl(path).lines:
                yield Item(f"{path}:{line.index}", line.image, line.text)
        else:
            yield Item(path, read_image(path))


def _batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Predictor:
    """A model of any format with its charset and normalization, for raw bitmaps.

    Args:
      model_path: `.keras`, SavedModel directory, `.tflite`, `.onnx` or TensorRT engine.
      data_dir: preprocessed directory for the charset and normalization (optional when
        `charset.txt` is next to the model).
      top_k: candidates per input.
      beam_width: CTC beam width (line models).
      threads: CPU threads for TFLite/onnxruntime.
    """

    def __init__(self, model_path: str, data_dir: str | None = None, *, top_k: int = 5,
                 beam_width: int = 10, threads: int | None = None):
        self.runner = inference.load(model_path, threads=threads)
        self.info, self.charset = inference.resolve_model_info(model_path, data_dir,
                                                               self.runner)
        if self.runner.sequence != (self.info.task == "lines"):
            raise ValueError(f"{model_path}: the model is "
                             f"{'a line model' if self.runner.sequence else 'a classifier'} but "
                             f"its metadata says task {self.info.task!r}")
        self.top_k = max(1, min(top_k, len(self.charset)))
        self.beam_width = max(beam_width, self.top_k)

    @property
    def task(self) -> str:
        return self.info.task

    def normalize(self, image: np.ndarray) -> np.ndarray:
        info = self.info
        if info.task == "chars":
            return imaging.normalize_char(image, info.image_height, info.margin,
                                          info.ink_threshold)
        return imaging.normalize_line(image, info.image_height, info.margin, info.ink_threshold)

    def predict(self, items: Sequence[Item]) -> list[dict]:
        """Results for a batch of items, in order (an item without ink gets an "error")."""
        results: list[dict | None] = [None] * len(items)
        good, images = [], []
        for i, item in enumerate(items):
            try:
                images.append(self.normalize(item.image))
                good.append(i)
            except imaging.EmptyImageError as err:
                results[i] = {"source": item.source, "error": str(err)}
        if images:
            run = self._chars if self.task == "chars" else self._lines
            for i, result in zip(good, run(images)):
                results[i] = {"source": items[i].source, **result}
        for item, result in zip(items, results):
            if item.truth is not None:
                result["truth"] = item.truth
                if "prediction" in result:
                    result["correct"] = result["prediction"] == item.truth
        return results

    def predict_files(self, paths: Sequence[str], batch_size: int = 32) -> Iterator[dict]:
        for batch in _batches(iter_items(paths), batch_size):
            yield from self.predict(batch)

    def _chars(self, images) -> list[dict]:
        probs = inference.softmax(inference.classify(self.runner, np.stack(images)))
        top = np.argsort(-probs, axis=-1, kind="stable")[:, :self.top_k]
        chars = self.charset.chars
        out = []
        for p, ids in zip(probs, top):
            out.append({"prediction": chars[ids[0]], "confidence": float(p[ids[0]]),
                        "top_k": [{"char": chars[i], "class_id": int(i),
                                   "probability": float(p[i])} for i in ids]})
        return out

    def _lines(self, images) -> list[dict]:
        from keras import ops

        from models import ctc
        logits, lengths = inference.recognize_lines(self.runner, images)
        log_probs = ops.log_softmax(ops.convert_to_tensor(logits, "float32"), axis=-1)
        decoded, scores = ops.ctc_decode(log_probs, ops.convert_to_tensor(lengths, "int32"),
                                         strategy="beam_search", beam_width=self.beam_width,
                                         top_paths=self.top_k, mask_index=ctc.BLANK_ID)
        decoded = np.asarray(ops.convert_to_numpy(decoded))
        scores = np.asarray(ops.convert_to_numpy(scores))
        greedy = ctc.ctc_greedy_decode(logits, lengths)
        chars = self.charset.chars
        out = []
        for n in range(len(images)):
            paths = [{"text": ctc.ids_to_text([int(i) for i in decoded[p, n] if i > 0], chars),
                      "probability": float(np.exp(scores[n, p]))}
                     for p in range(decoded.shape[0])]
            out.append({"prediction": paths[0]["text"], "confidence": paths[0]["probability"],
                        "greedy": ctc.ids_to_text(greedy[n], chars), "top_k": paths})
        return out
