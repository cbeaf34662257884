"""CTC loss and decoding for the CRNN, through `keras.ops` only (runs on every backend).

Convention, fixed for the whole project: class 0 is the CTC blank and charset character i has
class id i + 1. Label batches hold class ids (1..N) right-padded with 0.
"""
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


def _decode(logits, logit_length, strategy, beam_width):
    # Log-probabilities are what every backend's beam search expects; greedy is unaffected.
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    decoded, _ = ops.ctc_decode(
        log_probs,
        ops.cast(logit_length, "int32"),
        strategy=strategy,
        beam_width=beam_width,
        top_paths=1,
        mask_index=BLANK_ID,
    )
    best_paths = ops.convert_to_numpy(decoded)[0]
    # Keras pads the decoded sequences with -1.
    return [[int(i) for i in row if i >= 0] for row in np.asarray(best_paths)]


def ctc_greedy_decode(logits, logit_length):
    """Best-path decoding: argmax per step, merge repeats, drop blanks.

    Args:
        logits: `(batch, time, N + 1)` model outputs.
        logit_length: int `(batch,)` number of valid time steps per sample.

    Returns:
        One list of class ids (1..N) per sample.
    """
    return _decode(logits, logit_length, "greedy", beam_width=1)


def ctc_beam_decode(logits, logit_length, beam_width=10):
    """Beam-search decoding (no language model).

    Args:
        logits: `(batch, time, N + 1)` model outputs.
        logit_length: int `(batch,)` number of valid time steps per sample.
        beam_width: number of prefixes kept per step.

    Returns:
        The most probable labelling per sample, as a list of class ids (1..N).
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"`beam_width` must be a positive integer. Received: {beam_width!r}")
    return _decode(logits, logit_length, "beam_search", beam_width=beam_width)


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
