"""CTC loss and decoding for the CRNN, through `keras.ops` only (runs on every backend).

Convention, fixed for the whole project: class 0 is the CTC blank and charset character i has
class id i + 1. Label batches hold class ids (1..N) right-padded with 0.

This is the one home of CTC decoding (greedy, and beam search with its top paths): hccr-eval,
hccr-predict and the SavedModel's serving signature (`trainers/serving/export.py`, which calls
`ctc_beam_search` inside a `tf.function`) all decode through it.
"""
import concurrent.futures
import os

import numpy as np
from keras import ops

BLANK_ID = 0


def ctc_loss(labels, logits, label_length, logit_length):
    """Per-sample CTC negative log-likelihood.

    Args:
        labels: int `(batch, max_label_length)` class ids 1..N, padded with 0.
        logits: `(batch, time, N + 1)` model outputs (any float dtype; cast to float32, since
            CTC is numerically fragile in half precision and TensorFlow's kernel is float32).
        label_length: int `(batch,)` number of real labels per sample.
        logit_length: int `(batch,)` number of valid time steps per sample, e.g.
            `models.crnn_time_steps(unpadded_width)`.

    Returns:
        float32 `(batch,)` losses.
    """
    logits = ops.cast(logits, "float32")
    return ops.ctc_loss(
        ops.cast(labels, "int32"),
        logits,
        ops.cast(label_length, "int32"),
        ops.cast(logit_length, "int32"),
        mask_index=BLANK_ID,
    )


def _log_probs(logits):
    # Log-probabilities are what every backend's beam search expects; greedy is unaffected.
    return ops.log_softmax(ops.cast(logits, "float32"), axis=-1)


def _check_beam(beam_width, top_paths):
    for name, value in (("beam_width", beam_width), ("top_paths", top_paths)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {value!r}")
    if top_paths > beam_width:
        raise ValueError(f"`top_paths` must not exceed `beam_width` ({beam_width}). "
                         f"Received: {top_paths}")


def ctc_beam_search(logits, logit_length, beam_width=10, top_paths=1):
    """Beam-search decoding (no language model) as backend tensors.

    The one CTC beam search of the project: `ctc_beam_decode` and `ctc_beam_paths` read its
    result into lists, and the SavedModel's serving signature (`trainers/serving/export.py`)
    calls it inside a `tf.function` (under the TensorFlow backend it is TensorFlow ops only).

    Args:
        logits: `(batch, time, N + 1)` model outputs.
        logit_length: int `(batch,)` number of valid time steps per sample.
        beam_width: number of prefixes kept per step.
        top_paths: number of labellings returned per sample, best first (<= `beam_width`).

    Returns:
        `(decoded, log_probs)`: int32 `(top_paths, batch, time)` class ids (1..N) padded with
        -1, and float32 `(batch, top_paths)` log-probabilities of the labellings.
    """
    _check_beam(beam_width, top_paths)
    return ops.ctc_decode(
        _log_probs(logits),
        ops.cast(logit_length, "int32"),
        strategy="beam_search",
        beam_width=beam_width,
        top_paths=top_paths,
        mask_index=BLANK_ID,
    )


def _rows(decoded):
    # Keras pads the decoded sequences with -1.
    return [[int(i) for i in row if i >= 0] for row in np.asarray(decoded)]


def ctc_greedy_decode(logits, logit_length):
    """Best-path decoding: argmax per step, merge repeats, drop blanks.

    Args:
        logits: `(batch, time, N + 1)` model outputs.
        logit_length: int `(batch,)` number of valid time steps per sample.

    Returns:
        One list of class ids (1..N) per sample.
    """
    decoded, _ = ops.ctc_decode(
        _log_probs(logits),
        ops.cast(logit_length, "int32"),
        strategy="greedy",
        mask_index=BLANK_ID,
    )
    return _rows(ops.convert_to_numpy(decoded)[0])


def default_decode_workers():
    """Threads the beam search decodes on: the CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _beam_paths_rows(logits, logit_length, beam_width, top_paths):
    decoded, log_probs = ctc_beam_search(logits, logit_length, beam_width, top_paths)
    decoded = np.asarray(ops.convert_to_numpy(decoded))
    log_probs = np.asarray(ops.convert_to_numpy(log_probs))
    paths = [_rows(best) for best in decoded]  # (top_paths, batch) lists of ids
    return [[(paths[p][n], log_probs[n, p]) for p in range(top_paths)]
            for n in range(log_probs.shape[0])]


def ctc_beam_paths(logits, logit_length, beam_width=10, top_paths=1, workers=None):
    """The `top_paths` most probable labellings of each sample (`ctc_beam_search`).

    TensorFlow's beam-search kernel decodes a batch on one thread, and the search dominates
    line evaluation (about 37 ms a line at beam width 10 on 159 classes), so the batch is
    split into `workers` slices of rows decoded side by side. Each sample is decoded alone
    either way: the result does not depend on `workers`.

    Args:
        logits: `(batch, time, N + 1)` model outputs.
        logit_length: int `(batch,)` number of valid time steps per sample.
        beam_width: number of prefixes kept per step.
        top_paths: number of labellings per sample (<= `beam_width`).
        workers: threads to decode on (default: `default_decode_workers()`; 1: this thread).

    Returns:
        Per sample, `top_paths` pairs `(class ids 1..N, float32 log-probability)`, best first.
    """
    _check_beam(beam_width, top_paths)
    workers = default_decode_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be a positive integer. Received: {workers!r}")
    logits = np.asarray(ops.convert_to_numpy(logits))
    logit_length = np.asarray(ops.convert_to_numpy(logit_length))
    pieces = min(workers, len(logits))
    if pieces <= 1:
        return _beam_paths_rows(logits, logit_length, beam_width, top_paths)
    with concurrent.futures.ThreadPoolExecutor(pieces) as pool:
        parts = pool.map(lambda rows, lengths: _beam_paths_rows(rows, lengths, beam_width,
                                                                 top_paths),
                         np.array_split(logits, pieces), np.array_split(logit_length, pieces))
        return [paths for part in parts for paths in part]


def ctc_beam_decode(logits, logit_length, beam_width=10, workers=None):
    """Beam-search decoding (no language model): the most probable labelling per sample.

    Args:
        logits: `(batch, time, N + 1)` model outputs.
        logit_length: int `(batch,)` number of valid time steps per sample.
        beam_width: number of prefixes kept per step.
        workers: threads to decode on, as in `ctc_beam_paths`.

    Returns:
        The most probable labelling per sample, as a list of class ids (1..N).
    """
    return [paths[0][0] for paths in ctc_beam_paths(logits, logit_length, beam_width, 1,
                                                     workers)]


def ids_to_text(ids, charset_chars):
    """Turns decoded class ids into text.

    Args:
        ids: class ids 1..N (no blanks), e.g. one row of `ctc_greedy_decode`.
        charset_chars: the charset's characters in id order (`charset_chars[i]` has id i + 1).

    Returns:
        The decoded string.
    """
    text = []
    for class_id in ids:
        if not 1 <= class_id <= len(charset_chars):
            raise ValueError(
                f"Class ids must lie in [1, {len(charset_chars)}] (0 is the CTC blank). "
                f"Received: {class_id}"
            )
        text.append(charset_chars[class_id - 1])
    return "".join(text)


def text_to_ids(text, charset_chars):
    """Inverse of `ids_to_text`: the class ids (1..N) of each character of `text`.

    Args:
        text: a string whose characters are all in the charset.
        charset_chars: the charset's characters in id order.

    Returns:
        A list of class ids.
    """
    index = {char: i + 1 for i, char in enumerate(charset_chars)}
    missing = sorted({char for char in text if char not in index})
    if missing:
        raise ValueError(f"Characters not in the charset. Received: {''.join(missing)!r}")
    return [index[char] for char in text]
