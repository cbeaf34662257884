"""Prediction on files: images (PNG/JPEG/...), CASIA GNT and DGRL, with any model format.

    predictor = Predictor("export/tflite_int8/model.tflite")
    for result in predictor.predict_files(["a.png", "b.gnt"]):
        print(result["prediction"], result["confidence"])

Inputs are raw bitmaps of any size: dark ink on a white, grey, unevenly lit or noisy
background (a scan or a photo), or light ink on a dark one. Each is normalized exactly like the
Beam job normalizes training data (`beam_preprocess.contract.imaging.normalize_char` for a
classifier,
`normalize_line` for a line model, both starting with `normalize_background`: background to
255, white on black inverted), with the size, margin and ink threshold of the
model (from `--data DIR`'s metadata, or the `model_info.json` that hccr-export writes next to
every exported model).

The charset comes from `--data DIR`, or from `charset.txt` next to the model (every export
directory has one; the trainer keeps one in its workdir next to `best.keras`).

Every GNT sample and every DGRL text line is one input; their stored labels are reported as
`truth`, so a CASIA file doubles as a quick accuracy check.

Each input stands on its own: a file that does not exist, is empty, corrupt, truncated, of an
unsupported type or over PIL's decompression-bomb pixel limit, a damaged GNT/DGRL record (the
readers resynchronise after it) and an image without ink each give one result with an `error`
naming the input, and the other inputs are still predicted.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from typing import Iterable, Iterator, Sequence

import numpy as np

from beam_preprocess.contract import imaging
from beam_preprocess.contract.gnt import GntSample
from trainers.serving import inference

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CASIA_EXTENSIONS = (".gnt", ".dgrl")


@dataclasses.dataclass
class Item:
    """One input bitmap: its source ("file" or "file:index"), pixels, and label if known; or an
    input that could not be read (`image` None, `error` saying why)."""
    source: str
    image: np.ndarray | None
    truth: str | None = None
    error: str | None = None


def expand_paths(paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """Files as given, directories expanded to their supported files (sorted, recursive).

    Returns:
      (path, problem) pairs: problem is None, or why the path cannot be an input (it does
      not exist, or its extension is not a supported one), so the other paths still run.
    """
    out: list[tuple[str, str | None]] = []
    supported = IMAGE_EXTENSIONS + CASIA_EXTENSIONS
    for path in paths:
        if os.path.isdir(path):
            for root, _, files in sorted(os.walk(path)):
                out += [(os.path.join(root, f), None) for f in sorted(files)
                        if f.lower().endswith(supported)]
        elif os.path.exists(path):
            problem = None
            if not path.lower().endswith(supported):
                problem = (f"unsupported input; expected an image ({', '.join(IMAGE_EXTENSIONS)})"
                           f", .gnt or .dgrl file")
            out.append((path, problem))
        else:
            out.append((path, "does not exist"))
    return out


class ImageTooLargeError(ValueError):
    """An image over PIL's decompression-bomb pixel limit."""


def read_image(path: str) -> np.ndarray:
    """An image file as a uint8 grayscale bitmap (transparent pixels become background).

    Raises:
      ImageTooLargeError: more pixels than PIL's decompression-bomb limit
        (`PIL.Image.MAX_IMAGE_PIXELS`).
      OSError: not an image PIL reads, or a truncated or corrupt one.
    """
    import warnings

    from PIL import Image
    try:
        with warnings.catch_warnings():
            # PIL only warns between the limit and twice the limit: one limit, an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.mode in ("RGBA", "LA", "P"):
                    image = image.convert("RGBA")
                    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, image)
                return np.asarray(image.convert("L"), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(
            f"image too large: {str(err).split(', could be')[0]} (PIL.Image.MAX_IMAGE_PIXELS, "
            f"the decompression-bomb guard)") from None


# What reading one input file can raise when the file is damaged, empty or not what its name
# says (PIL raises SyntaxError, EOFError, zlib.error and struct.error for some broken files).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, struct.error)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def iter_items(paths: Sequence[str]) -> Iterator[Item]:
    """The bitmaps of image, GNT and DGRL files, in order; an input that cannot be read is an
    Item with an `error` (and the inputs after it are still read).

    A damaged GNT or DGRL record is one error Item named `file:offset`, and the records
    around it are still read (the readers' resync).
    """
    from beam_preprocess.contract.dgrl import read_dgrl
    from beam_preprocess.contract.gnt import read_gnt
    for path, problem in expand_paths(paths):
        if problem is not None:
            yield Item(path, None, error=problem)
            continue
        lower = path.lower()
        try:
            if os.path.getsize(path) == 0:
                yield Item(path, None, error="empty file")
            elif lower.endswith(".gnt"):
                for record in read_gnt(path, resync=True):
                    if isinstance(record, GntSample):
                        yield Item(f"{path}:{record.index}", record.image, record.char)
                    else:
                        yield _skipped_item(record)
            elif lower.endswith(".dgrl"):
                page = read_dgrl(path, resync=True)
                for line in page.lines:
                    yield Item(f"{path}:{line.index}", line.image, line.text)
                for skipped in page.skipped:
                    yield _skipped_item(skipped)
            else:
                yield Item(path, read_image(path))
        except READ_ERRORS as err:
            yield Item(path, None, error=_one_line(err))


def _skipped_item(skipped) -> Item:
    return Item(f"{skipped.path}:{skipped.offset}", None,
                error=f"damaged record: bytes {skipped.offset}..{skipped.end} skipped "
                      f"({skipped.reason})")


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
      threads: CPU threads for TFLite/onnxruntime and the CTC beam search (default: all).
      tta: test-time augmentation of a classifier, one of `inference.TTA_MODES` ("off": none).
    """

    def __init__(self, model_path: str, data_dir: str | None = None, *, top_k: int = 5,
                 beam_width: int = 10, threads: int | None = None, tta: str = "off"):
        self.runner = inference.load(model_path, threads=threads)
        self.info, self.charset = inference.resolve_model_info(model_path, data_dir,
                                                               self.runner)
        if self.runner.sequence != (self.info.task == "lines"):
            raise ValueError(f"{model_path}: the model is "
                             f"{'a line model' if self.runner.sequence else 'a classifier'} but "
                             f"its metadata says task {self.info.task!r}")
        self.runner = inference.with_tta(self.runner, tta)
        self.tta = tta
        self.threads = threads
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
        """Results for a batch of items, in order (an unreadable item or one without ink gets
        an "error")."""
        results: list[dict | None] = [None] * len(items)
        good, images = [], []
        for i, item in enumerate(items):
            if item.error is not None:
                results[i] = {"source": item.source, "error": item.error}
                continue
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
        from models import ctc
        logits, lengths = inference.recognize_lines(self.runner, images)
        beams = ctc.ctc_beam_paths(logits, lengths, beam_width=self.beam_width,
                                   top_paths=self.top_k, workers=self.threads)
        greedy = ctc.ctc_greedy_decode(logits, lengths)
        chars = self.charset.chars
        out = []
        for paths, greedy_ids in zip(beams, greedy):
            top = [{"text": ctc.ids_to_text(ids, chars), "probability": float(np.exp(log_prob))}
                   for ids, log_prob in paths]
            out.append({"prediction": top[0]["text"], "confidence": top[0]["probability"],
                        "greedy": ctc.ids_to_text(greedy_ids, chars), "top_k": top})
        return out
