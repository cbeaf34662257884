"""Tests for models/ctc.py and for the CRNN learning a toy sequence task with CTC."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import models  # noqa: E402
from models import ctc  # noqa: E402


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _confident_logits(frames, num_outputs, confidence=12.0):
    """One row per sample: each frame's class id gets a large logit."""
    logits = np.zeros((len(frames), len(frames[0]), num_outputs), np.float32)
    for sample, row in enumerate(frames):
        for step, class_id in enumerate(row):
            logits[sample, step, class_id] = confidence
    return logits


# === Loss ===


def test_ctc_loss_matches_the_path_sum_by_hand():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 2, 4)).astype(np.float32)
    labels = np.array([[3, 0], [2, 0]])
    log_p = _log_softmax(logits.astype(np.float64))
    # Sample 0, one frame, label [3]: the only path is "3".
    expected_0 = -log_p[0, 0, 3]
    # Sample 1, two frames, label [2]: paths "2 2", "blank 2", "2 blank" (blank is id 0).
    p = np.exp(log_p[1])
    expected_1 = -np.log(p[0, 2] * p[1, 2] + p[0, 0] * p[1, 2] + p[0, 2] * p[1, 0])
    loss = ctc.ctc_loss(labels, logits, np.array([1, 1]), np.array([1, 2]))
    loss = keras.ops.convert_to_numpy(loss)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    np.testing.assert_allclose(loss, [expected_0, expected_1], rtol=1e-5)


def test_ctc_loss_casts_half_precision_logits_to_float32():
    logits = _confident_logits([[1, 0, 2, 2]], num_outputs=3).astype(np.float16)
    loss = keras.ops.convert_to_numpy(
        ctc.ctc_loss(np.array([[1, 2]]), logits, np.array([2]), np.array([4]))
    )
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert 0.0 <= loss[0] < 1e-3  # the confident alignment explains the label
    wrong = keras.ops.convert_to_numpy(
        ctc.ctc_loss(np.array([[2, 1]]), logits, np.array([2]), np.array([4]))
    )
    assert wrong[0] > 10.0


# === Decoding ===


def test_greedy_and_beam_decode_agree_on_a_confident_sequence():
    # Frames: "1 1 blank 2 blank 2 3 3" -> 1 2 2 3 (a blank separates the repeated 2s).
    # The second sample is cut to 4 valid frames: "3 blank 1 1" -> 3 1; the rest is ignored.
    logits = _confident_logits(
        [[1, 1, 0, 2, 0, 2, 3, 3], [3, 0, 1, 1, 2, 2, 2, 2]], num_outputs=4
    )
    lengths = np.array([8, 4])
    greedy = ctc.ctc_greedy_decode(logits, lengths)
    beam = ctc.ctc_beam_decode(logits, lengths, beam_width=5)
    assert greedy == [[1, 2, 2, 3], [3, 1]]
    assert beam == greedy


def test_beam_decode_finds_the_labelling_that_greedy_misses():
    # Two frames, each p = [blank 0.5, id1 0.4, id2 0.1]. Greedy takes blank, blank -> "",
    # probability 0.25. Beam sums the three paths of "1": 0.4*0.4 + 0.4*0.5 + 0.5*0.4 = 0.56.
    probs = np.array([[[0.5, 0.4, 0.1], [0.5, 0.4, 0.1]]], np.float32)
    logits = np.log(probs)
    assert ctc.ctc_greedy_decode(logits, np.array([2])) == [[]]
    assert ctc.ctc_beam_decode(logits, np.array([2]), beam_width=4) == [[1]]


def test_beam_paths_are_the_labellings_best_first_with_their_probabilities():
    # The example above: "1" has p = 0.56, "" 0.25 and "2" 0.1*0.1 + 0.1*0.5 + 0.5*0.1 = 0.11
    # (then "1 2" and "2 1", 0.04 each).
    probs = np.array([[[0.5, 0.4, 0.1], [0.5, 0.4, 0.1]]], np.float32)
    [paths] = ctc.ctc_beam_paths(np.log(probs), np.array([2]), beam_width=4, top_paths=3)
    assert [ids for ids, _ in paths] == [[1], [], [2]]
    np.testing.assert_allclose([np.exp(p) for _, p in paths], [0.56, 0.25, 0.11], rtol=1e-5)
    assert all(p.dtype == np.float32 for _, p in paths)


def test_the_first_beam_path_is_the_beam_decode():
    rng = np.random.default_rng(3)
    logits = (3 * rng.normal(size=(4, 12, 6))).astype(np.float32)
    lengths = np.array([12, 9, 4, 1])
    paths = ctc.ctc_beam_paths(logits, lengths, beam_width=6, top_paths=4)
    assert [p[0][0] for p in paths] == ctc.ctc_beam_decode(logits, lengths, beam_width=6)
    for sample in paths:
        log_probs = [p for _, p in sample]
        assert log_probs == sorted(log_probs, reverse=True)
        assert len({tuple(ids) for ids, _ in sample}) == 4  # four different labellings


def test_beam_search_on_several_threads_gives_the_one_thread_result_in_order():
    rng = np.random.default_rng(5)
    logits = (3 * rng.normal(size=(7, 15, 5))).astype(np.float32)
    lengths = np.array([15, 3, 15, 8, 1, 12, 15])
    alone = ctc.ctc_beam_paths(logits, lengths, beam_width=5, top_paths=2, workers=1)
    for workers in (2, 3, 7, 16):  # uneven slices, one row each, more threads than rows
        assert ctc.ctc_beam_paths(logits, lengths, beam_width=5, top_paths=2,
                                  workers=workers) == alone
    # Each row decoded alone is the same row of the batch (no slice leaks into another).
    assert [ctc.ctc_beam_decode(logits[i:i + 1], lengths[i:i + 1], beam_width=5)[0]
            for i in range(7)] == [paths[0][0] for paths in alone]
    assert ctc.ctc_beam_decode(logits, lengths, beam_width=5, workers=3) == \
        [paths[0][0] for paths in alone]
    with pytest.raises(ValueError, match="workers.*Received: 0"):
        ctc.ctc_beam_decode(logits, lengths, workers=0)


def test_beam_width_and_top_paths_are_validated():
    logits, lengths = np.zeros((1, 2, 3), np.float32), np.array([2])
    with pytest.raises(ValueError, match="beam_width.*Received: 0"):
        ctc.ctc_beam_decode(logits, lengths, beam_width=0)
    with pytest.raises(ValueError, match="top_paths.*Received: 0"):
        ctc.ctc_beam_paths(logits, lengths, beam_width=2, top_paths=0)
    with pytest.raises(ValueError, match=r"must not exceed `beam_width` \(2\). Received: 3"):
        ctc.ctc_beam_paths(logits, lengths, beam_width=2, top_paths=3)


def test_ids_to_text_uses_id_minus_one_and_rejects_the_blank():
    charset = ["中", "文", "字"]
    assert ctc.ids_to_text([1, 3, 2, 2], charset) == "中字文文"
    assert ctc.text_to_ids("字中", charset) == [3, 1]
    assert ctc.ids_to_text(ctc.text_to_ids("文字中", charset), charset) == "文字中"
    with pytest.raises(ValueError, match="Received: 0"):
        ctc.ids_to_text([0], charset)
    with pytest.raises(ValueError, match="Received: 4"):
        ctc.ids_to_text([4], charset)
    with pytest.raises(ValueError, match="Received: '一'"):
        ctc.text_to_ids("一中", charset)


# === The CRNN learns a toy task ===

SLOT_WIDTH = 16  # pixels per symbol = 4 CTC frames
SLOTS = 4
HEIGHT = 32
NUM_SYMBOLS = 3


def _stripe_lines(num_samples, seed):
    """Synthetic "text lines": symbol k is a horizontal bar at height band k of its slot.

    Returns:
        images (n, 32, 64, 1) with ink 1.0, labels (n, SLOTS) padded with 0, label lengths.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((num_samples, HEIGHT, SLOT_WIDTH * SLOTS, 1), np.float32)
    labels = np.zeros((num_samples, SLOTS), np.int32)
    lengths = rng.integers(1, SLOTS + 1, size=num_samples)
    for sample, length in enumerate(lengths):
        for slot in range(length):
            symbol = int(rng.integers(1, NUM_SYMBOLS + 1))
            labels[sample, slot] = symbol
            top = 2 + (symbol - 1) * 10
            left = slot * SLOT_WIDTH
            # A gap on both sides of each bar, so repeated symbols stay separable.
            images[sample, top : top + 8, left + 3 : left + SLOT_WIDTH - 3, 0] = 1.0
    return images, labels, lengths.astype(np.int32)


class _CTCLossForTest(keras.losses.Loss):
    """CTC over full-width lines: label lengths from the 0 padding, all frames valid."""

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(y_true, "int32")
        label_length = keras.ops.sum(keras.ops.cast(labels > 0, "int32"), axis=-1)
        batch, frames = keras.ops.shape(y_pred)[0], keras.ops.shape(y_pred)[1]
        logit_length = keras.ops.full((batch,), frames, dtype="int32")
        return ctc.ctc_loss(labels, y_pred, label_length, logit_length)


def test_crnn_tiny_learns_a_toy_sequence_task_with_ctc():
    keras.utils.set_random_seed(1)
    images, labels, _ = _stripe_lines(32, seed=0)
    model = models.build_model("crnn_tiny", num_classes=NUM_SYMBOLS, input_shape=(HEIGHT, None, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_CTCLossForTest())
    # 50 Adam steps (about 7 s on 2 CPU cores); the loss typically ends near 0.01.
    losses = model.fit(images, labels, batch_size=16, epochs=25, verbose=0).history["loss"]

    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.1 * losses[0], losses
    # Decode with batch statistics: after only 50 steps the BatchNorm moving averages
    # (momentum 0.99) still lag behind the weights, so inference mode is not yet meaningful.
    logits = model(images, training=True)
    frames = np.full(len(images), models.crnn_time_steps(images.shape[2]))
    decoded = ctc.ctc_greedy_decode(logits, frames)
    truth = [[int(i) for i in row if i > 0] for row in labels]
    accuracy = np.mean([d == t for d, t in zip(decoded, truth, strict=True)])
    assert accuracy >= 0.75, (accuracy, decoded[:4], truth[:4])
