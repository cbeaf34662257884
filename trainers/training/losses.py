"""The trainer's losses (models return logits; the trainer owns the losses).

- `SparseCrossEntropy`: softmax cross-entropy on integer labels with label smoothing (Keras'
  sparse loss has no smoothing and the one-hot one needs dense labels), and on the
  `[label, partner's label, weight]` targets of mixup batches; `MixupSparseAccuracy` and
  `MixupSparseTopKAccuracy` score either against each image's own label.
- `PackedCTCLoss`: CTC on the packed `(label_length, logit_length, labels...)` targets that
  `input_pipeline.to_keras` builds for text lines, so a CRNN trains through `model.fit`.
"""
from __future__ import annotations

import keras
from keras import ops

from models import ctc


def is_mixed(y_true) -> bool:
    """Targets of a mixup batch, `(batch, 3)` = [label, partner's label, weight of label]
    (`input_pipeline.mixup_batches`), rather than integer labels `(batch,)` or `(batch, 1)`."""
    return len(y_true.shape) == 2 and y_true.shape[-1] == 3


def own_label(y_true):
    """The integer label of each image: the dominant one of a mixup target."""
    return y_true[:, 0] if is_mixed(y_true) else y_true


def _nll(log_probs, labels):
    labels = ops.reshape(ops.cast(labels, "int32"), (-1, 1))
    return -ops.squeeze(ops.take_along_axis(log_probs, labels, axis=-1), axis=-1)


@keras.saving.register_keras_serializable(package="hccr")
class MixupSparseAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Accuracy against integer labels, or against each image's own (dominant) label of a
    mixup target."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(own_label(y_true), y_pred, sample_weight)


@keras.saving.register_keras_serializable(package="hccr")
class MixupSparseTopKAccuracy(keras.metrics.SparseTopKCategoricalAccuracy):
    """Top-k accuracy against integer labels or a mixup target's own label."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(own_label(y_true), y_pred, sample_weight)


@keras.saving.register_keras_serializable(package="hccr")
class SparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels, with optional label smoothing.

    Args:
      label_smoothing: epsilon; the target puts 1 - epsilon on the label and spreads epsilon
        uniformly over all classes (as `CategoricalCrossentropy(label_smoothing=...)`).
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "sparse_cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        if is_mixed(y_true):  # mixup: the two labels' losses, weighted as their images
            weight = ops.cast(y_true[:, 2], "float32")
            nll = (weight * _nll(log_probs, y_true[:, 0])
                   + (1.0 - weight) * _nll(log_probs, y_true[:, 1]))
        else:
            nll = _nll(log_probs, y_true)
        if not self.label_smoothing:
            return nll
        uniform = -ops.mean(log_probs, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="hccr")
class PackedCTCLoss(keras.losses.Loss):
    """CTC loss with targets packed as int `(batch, 2 + L)`: [label_length, logit_length,
    class ids 1..N padded with 0] (`input_pipeline.to_keras`). Blank = class 0."""

    def __init__(self, name: str = "ctc", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        packed = ops.cast(y_true, "int32")
        label_length = packed[:, 0]
        logit_length = ops.minimum(packed[:, 1], ops.shape(y_pred)[1])
        return ctc.ctc_loss(packed[:, 2:], y_pred, label_length, logit_length)
