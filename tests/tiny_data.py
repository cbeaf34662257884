"""Tiny preprocessed directories for tests: the same files hccr-preprocess writes.

    from tests import tiny_data
    data_dir = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32)
    lines_dir = tiny_data.write_lines(tmp_path / "lines", num_classes=5, height=32)

Every class is a simple pattern a tiny model learns in a few steps: a filled block at a
class-specific cell of a grid, plus a class-specific stroke, jittered a little and with noise
per sample. Images are uint8 with background 255 and ink near 0, like the Beam job's output.
The directory holds shards `<split>-<shard:05d>-of-<n:05d>.tfrecord[.gz]`, `charset.txt` and
`metadata.json` (read back by `beam_preprocess.contract.metadata.load`). Local paths only; for other
schemes write locally and copy.
"""
from __future__ import annotations

import collections
import os

import numpy as np

from beam_preprocess.contract import metadata, schema
from beam_preprocess.contract.charset import Charset

# Distinct characters for the charsets (any would do; these are in GB2312 level 1).
CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你"


def char_pattern(label: int, size: int, rng: np.random.Generator, *, jitter: int = 1,
                 noise: float = 8.0) -> np.ndarray:
    """A `size` x `size` uint8 image for class `label` (background 255, dark ink).

    Class k: a filled square in cell k mod 9 of a 3x3 grid, and a bar whose orientation
    (horizontal, vertical, two diagonals) is k // 9 mod 4, so 36 classes are all distinct.
    """
    image = np.full((size, size), 255.0)
    cell = size // 3
    row, col = divmod(label % 9, 3)
    dy, dx = rng.integers(-jitter, jitter + 1, size=2)
    top = int(np.clip(row * cell + cell // 4 + dy, 0, size - 1))
    left = int(np.clip(col * cell + cell // 4 + dx, 0, size - 1))
    image[top:top + cell // 2, left:left + cell // 2] = 0.0
    kind = (label // 9) % 4
    middle = size // 2 + int(rng.integers(-jitter, jitter + 1))
    span = np.arange(size // 6, size - size // 6)
    if kind == 0:
        image[middle, span] = 0.0
    elif kind == 1:
        image[span, middle] = 0.0
    elif kind == 2:
        image[span, span] = 0.0
    else:
        image[span, size - 1 - span] = 0.0
    image += rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_shards(directory: str, split: str, records: list[bytes], num_shards: int,
                  compression: str) -> None:
    import tensorflow as tf
    options = tf.io.TFRecordOptions(compression_type=compression or None)
    suffix = ".gz" if compression == "GZIP" else ""
    for shard in range(num_shards):
        name = f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord{suffix}"
        with tf.io.TFRecordWriter(os.path.join(directory, name), options) as writer:
            for record in records[shard::num_shards]:
                writer.write(record)


def _finish(directory: str, *, task: str, charset: Charset, height: int, width: int | None,
            compression: str, counts: dict, class_counts: dict, num_shards: int) -> str:
    charset.save(os.path.join(directory, schema.CHARSET_FILE))
    total = sum(counts.values())
    metadata.write(directory, {
        "task": task,
        "image_height": height,
        "image_width": width,
        "num_classes": len(charset),
        "charset_sha256": charset.sha256(),
        "compression": compression,
        "splits": {split: {"num_examples": n, "num_shards": num_shards}
                   for split, n in counts.items()},
        "class_counts": class_counts,
        "counts": {"read": total, "written": total, "rejected": 0},
        "rejects": {},
        "command": "tests/tiny_data.py",
        "created": "1970-01-01T00:00:00Z",
    })
    return directory


def write_chars(directory, *, num_classes: int = 4, image_size: int = 32,
                splits: dict | None = None, num_shards: int = 2, compression: str = "",
                seed: int = 0) -> str:
    """Writes a tiny "chars" directory; returns its path.

    Args:
      directory: where to write (created).
      num_classes: classes (at most len(CHARS)); labels cycle so every class is balanced.
      image_size: side of the square images.
      splits: {split: number of examples}; default train 64, validation 32.
      num_shards: shards per split.
      compression: "" or "GZIP".
      seed: numpy seed of the jitter and noise.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    splits = splits or {"train": 64, "validation": 32}
    charset = Charset(list(CHARS[:num_classes]))
    rng = np.random.default_rng(seed)
    class_counts = {}
    for split, count in splits.items():
        records = []
        per_class = collections.Counter()
        for i in range(count):
            label = i % num_classes
            image = char_pattern(label, image_size, rng)
            records.append(schema.char_example(
                image=image.tobytes(), height=image_size, width=image_size, label=label,
                char=charset.chars[label], writer=f"w{i % 3}", orig_height=image_size,
                orig_width=image_size, source=f"tiny.gnt:{i}"))
            per_class[charset.chars[label]] += 1
        _write_shards(directory, split, records, num_shards, compression)
        class_counts[split] = dict(per_class)
    return _finish(directory, task="chars", charset=charset, height=image_size,
                   width=image_size, compression=compression, counts=dict(splits),
                   class_counts=class_counts, num_shards=num_shards)


def line_image(labels: list[int], height: int, rng: np.random.Generator,
               char_width: int | None = None) -> np.ndarray:
    """A text line: one `char_pattern` per label, side by side (height x n*char_width)."""
    char_width = char_width or height
    cells = [char_pattern(label, height, rng)[:, :char_width] if char_width < height else
             np.pad(char_pattern(label, height, rng), ((0, 0), (0, char_width - height)),
                    constant_values=255)
             for label in labels]
    return np.concatenate(cells, axis=1)


def write_lines(directory, *, num_classes: int = 5, height: int = 32,
                splits: dict | None = None, min_chars: int = 2, max_chars: int = 5,
                num_shards: int = 2, compression: str = "", seed: int = 0) -> str:
    """Writes a tiny "lines" directory (variable-width lines of `char_pattern`s).

    Args:
      directory: where to write (created).
      num_classes: charset size.
      height: line height (a multiple of 16 for the CRNN).
      splits: {split: number of lines}; default train 64, validation 16.
      min_chars, max_chars: characters per line.
      num_shards, compression, seed: as in `write_chars`.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    splits = splits or {"train": 64, "validation": 16}
    charset = Charset(list(CHARS[:num_classes]))
    rng = np.random.default_rng(seed)
    class_counts = {}
    for split, count in splits.items():
        records = []
        per_class = collections.Counter()
        for i in range(count):
            labels = rng.integers(0, num_classes, size=int(rng.integers(min_chars,
                                                                        max_chars + 1)))
            image = line_image(list(labels), height, rng)
            text = "".join(charset.chars[k] for k in labels)
            records.append(schema.line_example(
                image=image.tobytes(), height=height, width=image.shape[1],
                labels=[int(k) for k in labels], text=text, writer=f"w{i % 3}",
                orig_height=height, orig_width=image.shape[1], source=f"tiny.dgrl:{i}"))
            per_class.update(text)
        _write_shards(directory, split, records, num_shards, compression)
        class_counts[split] = dict(per_class)
    return _finish(directory, task="lines", charset=charset, height=height, width=None,
                   compression=compression, counts=dict(splits), class_counts=class_counts,
                   num_shards=num_shards)
