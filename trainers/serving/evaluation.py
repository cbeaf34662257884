"""Evaluation of a model of any format on a split of a preprocessed directory.

    report = evaluate("workdir/best.keras", "data/chars", "test", out_dir="eval/")

Classifiers ("chars"): top-1 and top-5 accuracy, weighted and macro F1 (scikit-learn),
per-class precision and recall (`per_class.csv`), the most-confused pairs
(`confused_pairs.csv`) and a heatmap of the confusion matrix restricted to the classes of those
pairs (`confusion.png`, CJK labels drawn with a CJK font found on the machine), and beside it
a grid of real samples of those pairs (`confused_samples.png`): for "A read as B", examples of
A that the model read as B next to examples of B it read correctly, so the reason shows.

Text lines ("lines"): character error rate (total edit distance / total reference characters)
and line accuracy (exact matches), with greedy and beam-search CTC decoding, plus the first
mis-recognized lines (`errors.csv`).

`report.json` holds everything. The model goes through `trainers.serving.inference.load`, so a
`.keras` file, a SavedModel, a TFLite or an ONNX file is judged by the same code.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from typing import Iterator

import numpy as np

from beam_preprocess.contract import metadata, schema
from beam_preprocess.progress import progress_bar
from trainers.serving import inference

REPORT_FILE = "report.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSED_FILE = "confused_pairs.csv"
CONFUSION_PNG = "confusion.png"
CONFUSED_SAMPLES_PNG = "confused_samples.png"
ERRORS_FILE = "errors.csv"

# Fonts tried first for the heatmap labels; any installed font that has CJK glyphs also works.
CJK_FONT_NAMES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Micro Hei",
                  "WenQuanYi Zen Hei", "AR PL UKai CN", "AR PL UMing CN", "LXGW WenKai",
                  "AR PL KaitiM GB", "AR PL SungtiL GB", "Droid Sans Fallback")

# The confused-samples grid: one row per pair (at most MAX_SAMPLE_PAIRS, the most frequent
# first), MISREAD_SAMPLES examples of the true class read as the other, then CORRECT_SAMPLES
# examples of the other class read correctly.
MAX_SAMPLE_PAIRS = 20
MISREAD_SAMPLES = 3
CORRECT_SAMPLES = 2


# === Reading a split ===


def read_split(info, split: str, *, batch_size: int = 64, limit: int | None = None
               ) -> Iterator[dict]:
    """Batches of a split of a preprocessed directory, as numpy.

    Args:
      info: `beam_preprocess.contract.metadata.load(data_dir)`.
      split: split name ("train", "validation", "test", ...).
      batch_size: examples per batch.
      limit: stop after this many examples (None: the whole split).

    Yields:
      dicts with "image" uint8 (N, H, W) padded with 255 (line widths vary), "width" (N,), and
      "label" (N,) int64 for chars, or "labels" (list of int lists) and "text" for lines.

    Raises:
      FileNotFoundError: the split is not in the metadata, or a shard it lists is missing.
      input_pipeline.DamagedShardError: a shard is truncated or corrupt (named).
    """
    import tensorflow as tf

    from trainers.training import input_pipeline
    if split not in info.splits:
        raise FileNotFoundError(f"no shards match {info.shard_glob(split)} (splits in the "
                                f"metadata: {sorted(info.splits)})")
    files = input_pipeline.listed_shards(info, split)  # never stale extra shards
    spec = schema.feature_spec(info.task)
    lines = info.task == "lines"

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8),
                           tf.stack([ex["height"], ex["width"]]))
        out = {"image": image, "width": ex["width"]}
        if lines:
            out["labels"] = tf.sparse.to_dense(ex["labels"], default_value=-1)
            out["text"] = ex["text"]
        else:
            out["label"] = ex["label"]
        return out

    ds = tf.data.TFRecordDataset(files, compression_type=info.compression or None)
    if limit is not None:
        ds = ds.take(limit)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    padding = {"image": tf.constant(255, tf.uint8), "width": tf.constant(0, tf.int64)}
    if lines:
        padding.update(labels=tf.constant(-1, tf.int64), text=tf.constant(b""))
    else:
        padding["label"] = tf.constant(-1, tf.int64)
    ds = ds.padded_batch(batch_size, padding_values=padding).prefetch(2)
    ds = ds.with_options(input_pipeline.finite_pass_options())
    with input_pipeline.naming_damaged_shards(files, info.compression):
        for batch in ds.as_numpy_iterator():
            if lines:
                batch["labels"] = [[int(i) for i in row if i >= 0] for row in batch["labels"]]
                batch["text"] = [t.decode("utf-8") for t in batch["text"]]
            yield batch


def split_size(info, split: str, limit: int | None) -> int:
    """Number of examples `read_split` will give (for progress), from the metadata."""
    n = int(info.splits.get(split, {}).get("num_examples", 0) or 0)
    if limit is not None:
        return min(n, limit) if n else limit
    return n


# === Metrics ===


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions).

    rapidfuzz's, some 500 times faster than the pure-Python loop it replaced and with the same
    distances (bench/bench_cer.py, docs/benchmarks.md).
    """
    from rapidfuzz.distance import Levenshtein
    return Levenshtein.distance(a, b)


def classifier_metrics(y_true: np.ndarray, top_k: np.ndarray, num_classes: int) -> dict:
    """Accuracy, F1 and the confusion counts of a classifier.

    Args:
      y_true: (N,) class ids.
      top_k: (N, k) predicted class ids, best first (k >= 1).
      num_classes: number of classes.

    Returns:
      dict with top1_accuracy, top5_accuracy (top-k for k < 5), weighted_f1, macro_f1, and the
      arrays "y_pred", "confusion" (num_classes x num_classes counts, rows = truth).
    """
    from sklearn.metrics import f1_score
    y_pred = top_k[:, 0]
    k5 = min(5, top_k.shape[1])
    confusion = np.bincount(y_true * num_classes + y_pred,
                            minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return {
        "top1_accuracy": float(np.mean(y_pred == y_true)),
        "top5_accuracy": float(np.mean((top_k[:, :k5] == y_true[:, None]).any(axis=1))),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro",
                                   zero_division=0)),
        "y_pred": y_pred,
        "confusion": confusion,
    }


def most_confused(confusion: np.ndarray, chars, n: int = 20) -> list[dict]:
    """The `n` largest off-diagonal cells of a confusion matrix, as dicts."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:n]
    support = confusion.sum(axis=1)
    pairs = []
    for index in flat:
        t, p = divmod(int(index), confusion.shape[0])
        if off[t, p] == 0:
            break
        pairs.append({"true_id": t, "true": chars[t], "predicted_id": p, "predicted": chars[p],
                      "count": int(off[t, p]), "rate": float(off[t, p] / max(1, support[t]))})
    return pairs


def line_metrics(references, hypotheses) -> dict:
    """CER and line accuracy of decoded lines against their reference texts."""
    from rapidfuzz.distance import Levenshtein  # `edit_distance`, without an import per line
    distance = sum(Levenshtein.distance(r, h) for r, h in zip(references, hypotheses))
    chars = sum(len(r) for r in references)
    exact = sum(r == h for r, h in zip(references, hypotheses))
    n = len(references)
    return {"cer": distance / max(1, chars), "line_accuracy": exact / max(1, n),
            "edit_distance": distance, "reference_chars": chars, "lines": n}


def pair_sample_indices(y_true: np.ndarray, y_pred: np.ndarray, pairs: list[dict], *,
                        misread: int = MISREAD_SAMPLES, correct: int = CORRECT_SAMPLES
                        ) -> list[dict]:
    """Which examples of the split to show for each confused pair.

    Args:
      y_true: (N,) class ids of the split, in reading order.
      y_pred: (N,) top-1 predictions.
      pairs: `most_confused` output.
      misread: examples of the true class predicted as the other class, per pair.
      correct: examples of the predicted class predicted correctly, per pair.

    Returns:
      One dict per pair: the pair's fields plus "misread" and "correct" (lists of example
      indices, first in the split first; "correct" is empty if the model never read the
      predicted class right).
    """
    out = []
    for pair in pairs:
        t, p = pair["true_id"], pair["predicted_id"]
        out.append({**pair,
                    "misread": np.flatnonzero((y_true == t) & (y_pred == p))[:misread].tolist(),
                    "correct": np.flatnonzero((y_true == p) & (y_pred == p))[:correct].tolist()})
    return out


def read_examples(info, split: str, indices, y_true: np.ndarray, *, batch_size: int = 64,
                  limit: int | None = None) -> dict[int, np.ndarray]:
    """The images of some examples of a split, by index, reading only as far as the last one.

    `y_true` (the labels of the evaluation pass) is checked against the labels read again, so
    a split whose order changed between the two reads stops with an error instead of showing
    the wrong images.

    Returns:
      {index: uint8 (H, W) image}.

    Raises:
      RuntimeError: the labels read again differ from `y_true`.
    """
    wanted = set(int(i) for i in indices)
    images: dict[int, np.ndarray] = {}
    if not wanted:
        return images
    last = max(wanted)
    offset = 0
    for batch in read_split(info, split, batch_size=batch_size, limit=limit):
        n = len(batch["label"])
        if not np.array_equal(batch["label"], y_true[offset:offset + n]):
            raise RuntimeError(f"split {split!r} of {info.data_dir} was read in a different "
                               f"order the second time (examples {offset}-{offset + n - 1}); "
                               f"cannot show the confused samples")
        for i in wanted & set(range(offset, offset + n)):
            image = batch["image"][i - offset]
            images[i] = image[:, :int(batch["width"][i - offset])]
        offset += n
        if offset > last:
            break
    return images


# === Plots ===


def find_cjk_font() -> str | None:
    """Path of an installed font with CJK glyphs (for matplotlib), or None."""
    from matplotlib import font_manager
    fonts = font_manager.fontManager.ttflist
    by_name = {f.name: f.fname for f in fonts}
    for name in CJK_FONT_NAMES:
        if name in by_name:
            return by_name[name]
    from matplotlib.ft2font import FT2Font
    for f in fonts:  # any font whose character map has common CJK characters
        try:
            charmap = FT2Font(f.fname).get_charmap()
        except (OSError, RuntimeError):
            continue
        if all(ord(c) in charmap for c in "的一是"):
            return f.fname
    return None


def plot_confusion(confusion: np.ndarray, chars, pairs: list[dict], path: str,
                   max_classes: int = 20) -> dict:
    """Heatmap (row-normalized, in %) of the classes involved in the most-confused pairs.

    Returns:
      dict with the classes drawn and the font used (None: no CJK font, labels are U+XXXX).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties

    classes: list[int] = []
    for pair in pairs:
        for c in (pair["true_id"], pair["predicted_id"]):
            if c not in classes and len(classes) < max_classes:
                classes.append(c)
    if not classes:  # no confusion at all: show the largest classes
        classes = list(np.argsort(confusion.sum(axis=1))[::-1][:max_classes])
    sub = confusion[np.ix_(classes, classes)].astype(np.float64)
    support = confusion[classes].sum(axis=1, keepdims=True)
    rates = 100.0 * sub / np.maximum(support, 1)
    font_path = find_cjk_font()
    font = FontProperties(fname=font_path, size=11) if font_path else None
    labels = [chars[c] if font_path else f"U+{ord(chars[c]):04X}" for c in classes]

    size = 1.0 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(classes)))
    ax.set_yticks(range(len(classes)))
    ax.set_xticklabels(labels, fontproperties=font)
    ax.set_yticklabels(labels, fontproperties=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion (% of true class), {len(classes)} most-confused classes")
    if len(classes) <= 25:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if sub[i, j]:
                    ax.text(j, i, f"{rates[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 50 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"classes": [chars[c] for c in classes], "font": font_path}


def plot_confused_samples(samples: list[dict], images: dict[int, np.ndarray], chars,
                          path: str) -> dict:
    """Grid of real samples of the most-confused pairs.

    Row "A -> B": the examples of A that the model read as B (red frames), then examples of B
    that it read correctly (green frames). Each cell's caption is the example's index in the
    split.

    Args:
      samples: `pair_sample_indices` output.
      images: `read_examples` output (must hold every index in `samples`).
      chars: the charset's characters in class-id order.
      path: the PNG to write.

    Returns:
      dict with "pairs" (true, predicted, count and the example indices drawn per pair) and
      "font" (None: no CJK font, labels are U+XXXX).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties

    font_path = find_cjk_font()

    def label(c):
        return chars[c] if font_path else f"U+{ord(chars[c]):04X}"

    if not samples:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No confused pairs: every example was classified correctly.",
                ha="center", va="center")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return {"pairs": [], "font": font_path}

    columns = max(max(len(s["misread"]) for s in samples), 1) + max(
        max(len(s["correct"]) for s in samples), 1)
    misread_columns = columns - max(max(len(s["correct"]) for s in samples), 1)
    fig, axes = plt.subplots(len(samples), columns, squeeze=False,
                             figsize=(1.15 * columns + 1.4, 1.25 * len(samples) + 0.9))
    big = FontProperties(fname=font_path, size=12) if font_path else None
    for row, pair in enumerate(samples):
        cells = ([("misread", i) for i in pair["misread"]]
                 + [None] * (misread_columns - len(pair["misread"]))
                 + [("correct", i) for i in pair["correct"]])
        cells += [None] * (columns - len(cells))
        for col, cell in enumerate(cells):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if cell is None:
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if col == misread_columns and not pair["correct"]:
                    ax.text(0.5, 0.5, "never read\ncorrectly", ha="center", va="center",
                            fontsize=7, transform=ax.transAxes)
                continue
            kind, index = cell
            ax.imshow(images[index], cmap="gray", vmin=0, vmax=255)
            for spine in ax.spines.values():
                spine.set_color("tab:red" if kind == "misread" else "tab:green")
                spine.set_linewidth(2)
            ax.set_xlabel(f"#{index}", fontsize=6, labelpad=1)
        axes[row, 0].set_ylabel(
            f"{label(pair['true_id'])} \u2192 {label(pair['predicted_id'])}\n"
            f"{pair['count']} ({100 * pair['rate']:.0f}%)",
            fontproperties=big, rotation=0, ha="right", va="center", labelpad=8,
            fontsize=None if big else 9)
    axes[0, 0].set_title("true A, read as B", fontsize=8, color="tab:red", loc="left")
    axes[0, misread_columns].set_title("B, read correctly", fontsize=8, color="tab:green",
                                       loc="left")
    fig.suptitle(f"{len(samples)} most-confused pairs (A \u2192 B: count, % of A): real "
                 f"samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"pairs": [{"true": chars[s["true_id"]], "predicted": chars[s["predicted_id"]],
                       "count": s["count"], "misread": s["misread"], "correct": s["correct"]}
                      for s in samples],
            "font": font_path}


# === Evaluation ===


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Options of `evaluate` (the hccr-eval flags), whose defaults are these.

    Attributes:
      split: the split to evaluate.
      batch_size: examples per model call.
      max_examples: evaluate only the first N examples of the split (default: the whole split).
      beam_width: beam width of the CTC beam search (lines).
      num_confused: number of most-confused pairs to report and plot (chars).
      threads: CPU threads for TFLite and onnxruntime, for the CTC beam search (lines), and
        for TensorFlow under hccr-eval (default: all cores).
      progress: a progress line on stderr.
      tta: test-time augmentation of a classifier: the probabilities averaged over one-pixel
        shifts (shift: 5 model calls per image), +-8 % scalings (scale: 3), or both (all: 7);
        off by default. On writers outside the CASIA sample, all gained up to 0.4 point
        on most models and lost 0.2 on one (docs/benchmarks.md).
    """
    split: str = "test"
    batch_size: int = 64
    max_examples: int | None = None
    beam_width: int = 10
    num_confused: int = 20
    threads: int | None = None
    progress: bool = True
    tta: inference.TTAMode = "off"


def evaluate(model, data_dir: str, split: str, out_dir: str | None = None, *,
             batch_size: int = EvalConfig.batch_size,
             max_examples: int | None = EvalConfig.max_examples,
             beam_width: int = EvalConfig.beam_width,
             num_confused: int = EvalConfig.num_confused, progress: bool = EvalConfig.progress,
             threads: int | None = EvalConfig.threads, tta: str = EvalConfig.tta,
             keep_predictions: bool = False) -> dict:
    """Evaluates a model on a split and (with `out_dir`) writes the report and plots.

    Args:
      model: a model path of any format, or a `trainers.serving.inference.Runner`.
      data_dir: the preprocessed directory (metadata.json, charset.txt, shards).
      split: the split to evaluate.
      out_dir: where to write report.json, CSVs and the PNG; None writes nothing.
      batch_size: examples per model call.
      max_examples: evaluate only the first N examples of the split.
      beam_width: beam width of the CTC beam search (lines).
      num_confused: number of most-confused pairs to report and plot (chars).
      progress: print a progress line on stderr.
      threads: CPU threads for TFLite and onnxruntime, and for the CTC beam search.
      tta: test-time augmentation of a classifier, one of `inference.TTA_MODES`.
      keep_predictions: add the per-example predictions (numpy) under "_predictions" (not
        written to report.json; used by the export report to compare formats).

    Returns:
      The report as a dict (what report.json holds).

    Raises:
      ValueError: the model does not fit the data (task or number of classes).
    """
    info = metadata.load(data_dir)
    runner = model if isinstance(model, inference.Runner) else inference.load(model,
                                                                                threads=threads)
    _check_compatible(runner, info)
    runner = inference.with_tta(runner, tta)
    total = split_size(info, split, max_examples)
    bar = progress_bar(total, f"eval {split}", unit="ex", enabled=progress)
    start = time.perf_counter()
    if info.task == "chars":
        report, predictions = _evaluate_chars(runner, info, split, batch_size, max_examples,
                                              num_confused, bar)
    else:
        report, predictions = _evaluate_lines(runner, info, split, batch_size, max_examples,
                                              beam_width, threads, bar)
    bar.close()
    seconds = time.perf_counter() - start
    n = report["num_examples"]
    report = {"model": runner.path, "format": runner.format, "model_name": runner.name,
              "data_dir": data_dir, "split": split, "task": info.task,
              "num_classes": info.num_classes, "tta": tta, **report,
              "seconds": round(seconds, 3),
              "examples_per_second": round(n / seconds, 1) if seconds else None}
    if out_dir:
        if info.task == "chars":
            # A second read of the split, as far as the last example shown: the images of
            # the most-confused pairs (the pairs are only known once every example is read).
            samples = pair_sample_indices(predictions["y_true"], predictions["top_k"][:, 0],
                                          predictions["pairs"][:MAX_SAMPLE_PAIRS])
            predictions["samples"] = samples
            predictions["sample_images"] = read_examples(
                info, split, [i for s in samples for i in s["misread"] + s["correct"]],
                predictions["y_true"], batch_size=batch_size, limit=max_examples)
        _write_outputs(report, predictions, info, out_dir, num_confused)
    if keep_predictions:
        report["_predictions"] = predictions
    return report


def _check_compatible(runner, info) -> None:
    if runner.sequence != (info.task == "lines"):
        kind = "a CTC line model" if runner.sequence else "a classifier"
        raise ValueError(f"{runner.path or runner.name} is {kind}, but {info.data_dir} holds "
                         f"task {info.task!r}")
    if runner.input_height is not None and runner.input_height != info.image_height:
        raise ValueError(f"{runner.path or runner.name} takes images of height "
                         f"{runner.input_height}; {info.data_dir} has {info.image_height}")


def _evaluate_chars(runner, info, split, batch_size, limit, num_confused, bar):
    trues, tops = [], []
    for batch in read_split(info, split, batch_size=batch_size, limit=limit):
        logits = inference.classify(runner, batch["image"])
        if logits.shape[-1] != info.num_classes:
            raise ValueError(f"{runner.path or runner.name} has {logits.shape[-1]} outputs; "
                             f"{info.data_dir} has {info.num_classes} classes")
        k = min(5, logits.shape[-1])
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
        trues.append(batch["label"])
        tops.append(top)
        bar.update(len(top))
    if not trues:
        raise ValueError(f"split {split!r} of {info.data_dir} is empty")
    y_true = np.concatenate(trues).astype(np.int64)
    top_k = np.concatenate(tops).astype(np.int64)
    m = classifier_metrics(y_true, top_k, info.num_classes)
    pairs = most_confused(m["confusion"], info.charset.chars, num_confused)
    report = {"num_examples": int(len(y_true)),
              "metrics": {k: m[k] for k in ("top1_accuracy", "top5_accuracy", "weighted_f1",
                                            "macro_f1")},
              "most_confused": pairs}
    return report, {"y_true": y_true, "top_k": top_k, "confusion": m["confusion"],
                    "pairs": pairs}


def _evaluate_lines(runner, info, split, batch_size, limit, beam_width, threads, bar):
    from models import ctc
    chars = info.charset.chars
    refs, greedy, beam = [], [], []
    for batch in read_split(info, split, batch_size=batch_size, limit=limit):
        images = [image[:, :w] for image, w in zip(batch["image"], batch["width"])]
        logits, lengths = inference.recognize_lines(runner, images)
        if logits.shape[-1] != info.num_classes + 1:
            raise ValueError(f"{runner.path or runner.name} has {logits.shape[-1]} outputs; a "
                             f"CRNN for {info.data_dir} has {info.num_classes} + 1 (blank)")
        greedy += [ctc.ids_to_text(ids, chars) for ids in ctc.ctc_greedy_decode(logits, lengths)]
        beam += [ctc.ids_to_text(ids, chars)
                 for ids in ctc.ctc_beam_decode(logits, lengths, beam_width=beam_width,
                                                workers=threads)]
        refs += [ctc.ids_to_text([i + 1 for i in labels], chars) for labels in batch["labels"]]
        bar.update(len(images))
    if not refs:
        raise ValueError(f"split {split!r} of {info.data_dir} is empty")
    report = {"num_examples": len(refs), "beam_width": beam_width,
              "metrics": {"greedy": line_metrics(refs, greedy),
                          "beam": line_metrics(refs, beam)}}
    report["metrics"]["cer"] = report["metrics"]["greedy"]["cer"]
    report["metrics"]["line_accuracy"] = report["metrics"]["greedy"]["line_accuracy"]
    return report, {"references": refs, "greedy": greedy, "beam": beam}


def _write_outputs(report, predictions, info, out_dir, num_confused) -> None:
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    if info.task == "chars":
        files["per_class"] = _write_per_class(predictions, info, out_dir)
        path = os.path.join(out_dir, CONFUSED_FILE)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["true", "predicted", "true_id", "predicted_id", "count", "rate"])
            for p in predictions["pairs"]:
                writer.writerow([p["true"], p["predicted"], p["true_id"], p["predicted_id"],
                                 p["count"], f"{p['rate']:.4f}"])
        files["confused_pairs"] = CONFUSED_FILE
        plot = plot_confusion(predictions["confusion"], info.charset.chars, predictions["pairs"],
                              os.path.join(out_dir, CONFUSION_PNG), max_classes=num_confused)
        files["confusion_png"] = CONFUSION_PNG
        report["plot"] = plot
        report["confused_samples"] = plot_confused_samples(
            predictions["samples"], predictions["sample_images"], info.charset.chars,
            os.path.join(out_dir, CONFUSED_SAMPLES_PNG))
        files["confused_samples_png"] = CONFUSED_SAMPLES_PNG
    else:
        path = os.path.join(out_dir, ERRORS_FILE)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "reference", "greedy", "beam", "greedy_edits"])
            written = 0
            for i, (r, g, b) in enumerate(zip(predictions["references"], predictions["greedy"],
                                              predictions["beam"])):
                if r != g or r != b:
                    writer.writerow([i, r, g, b, edit_distance(r, g)])
                    written += 1
                    if written >= 200:
                        break
        files["errors"] = ERRORS_FILE
    report["files"] = files
    tmp = os.path.join(out_dir, REPORT_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, REPORT_FILE))


def _write_per_class(predictions, info, out_dir) -> str:
    from sklearn.metrics import precision_recall_fscore_support
    labels = np.arange(info.num_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        predictions["y_true"], predictions["top_k"][:, 0], labels=labels, zero_division=0)
    predicted = predictions["confusion"].sum(axis=0)
    path = os.path.join(out_dir, PER_CLASS_FILE)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class_id", "char", "support", "predicted", "precision", "recall", "f1"])
        for c in labels:
            writer.writerow([int(c), info.charset.chars[c], int(support[c]), int(predicted[c]),
                             f"{precision[c]:.4f}", f"{recall[c]:.4f}", f"{f1[c]:.4f}"])
    return PER_CLASS_FILE


def summary_lines(report: dict) -> list[str]:
    """Human-readable lines for a report (what hccr-eval prints)."""
    head = (f"{report['model_name']} ({report['format']}) on {report['split']}: "
            f"{report['num_examples']} examples, {report['examples_per_second']} ex/s")
    if report.get("tta", "off") != "off":
        head += f", test-time augmentation {report['tta']!r}"
    m = report["metrics"]
    if report["task"] == "chars":
        lines = [head, f"  top-1 {100 * m['top1_accuracy']:.2f}%  top-5 "
                       f"{100 * m['top5_accuracy']:.2f}%  weighted F1 {m['weighted_f1']:.4f}"]
        for p in report.get("most_confused", [])[:5]:
            lines.append(f"  {p['true']} -> {p['predicted']}: {p['count']} "
                         f"({100 * p['rate']:.1f}%)")
        return lines
    return [head,
            f"  greedy: CER {100 * m['greedy']['cer']:.2f}%  line accuracy "
            f"{100 * m['greedy']['line_accuracy']:.2f}%",
            f"  beam({report['beam_width']}): CER {100 * m['beam']['cer']:.2f}%  line accuracy "
            f"{100 * m['beam']['line_accuracy']:.2f}%"]


def print_summary(report: dict, stream=None) -> None:
    stream = stream or sys.stdout
    for line in summary_lines(report):
        print(line, file=stream)
