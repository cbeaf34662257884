"""Exponential moving average (EMA, "Polyak averaging") of the trained weights.

The optimizer keeps the averages (Keras' `use_ema=True`: after every update,
`average = m * average + (1 - m) * weight`, the first update copying the weight), so they are
optimizer variables: the resumable checkpoint (`model.save_weights`) stores and restores them,
and under Horovod every rank applies the same all-reduced gradients to the same weights, so
every rank's averages agree too. The model trains on its own ("raw") weights; what is judged
and kept uses the averages:

- validation inside `fit`: the averages are swapped in for every evaluation (Keras'
  `SwapEMAWeights`, whose `on_test_begin`/`on_test_end` this inherits);
- best.keras, and every decision taken at an epoch's end (plateau, early stopping, the logs):
  `EMAWeights` swaps the averages in at the epoch's end, and its `swap_back` callback swaps the
  raw weights back right before the resumable checkpoint, which therefore always stores raw
  weights in the model and the averages in the optimizer;
- final.keras and the final metrics: `load_averages` after the last `fit`.

Why not `SwapEMAWeights(swap_on_epoch=True)` alone: it keeps the averages in the model from an
epoch's end to the next epoch's start, so a checkpoint saved at the epoch's end would store the
two swapped (a resumed run would train on from the averages), and after early stopping `fit`'s
own finalisation would copy the raw weights into final.keras.

    callbacks = [..., ema := ema_lib.EMAWeights(), plateau, best_checkpoint, csv,
                 ema.swap_back, resumable_checkpoint]
"""
from __future__ import annotations

import keras


def optimizer_kwargs(momentum: float) -> dict:
    """The optimizer arguments for an EMA of momentum `momentum` (0: none)."""
    return dict(use_ema=True, ema_momentum=momentum) if momentum else {}


def _averaging_optimizer(model: keras.Model):
    """The optimizer that holds the averages (the inner one of a LossScaleOptimizer)."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if not getattr(optimizer, "use_ema", False):
        raise ValueError(f"optimizer {type(optimizer).__name__} of model {model.name!r} keeps "
                         f"no weight averages (built without use_ema=True)")
    return optimizer


def averages(model: keras.Model) -> list:
    """The averaged values of `model.trainable_variables` (numpy arrays, in that order)."""
    optimizer = _averaging_optimizer(model)
    return [keras.ops.convert_to_numpy(a) for a in optimizer._model_variables_moving_average]


def load_averages(model: keras.Model) -> None:
    """Copies the averages into the model's weights (for good: the run's last step)."""
    optimizer = _averaging_optimizer(model)
    for variable, average in zip(optimizer._trainable_variables,
                                 optimizer._model_variables_moving_average):
        variable.assign(average)


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """Puts the averaged weights in the model for every evaluation and from an epoch's end
    until `swap_back` (see the module docstring for where the two go in the callback list).

    `fit` copies the averages into the model when it returns (the optimizer's
    `finalize_variable_values`); the raw weights are put back then, so a `fit` that continues
    the run (the trainer's rest of an interrupted epoch, then whole epochs) trains on from
    them exactly as an unbroken run would.
    """

    def __init__(self):
        super().__init__(swap_on_epoch=False)
        self.swap_back = _SwapBack(self)
        self._raw_at_end = None

    def on_train_begin(self, logs=None):
        self._raw_at_end = None

    def on_epoch_end(self, epoch, logs=None):
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True

    def on_train_end(self, logs=None):
        if self._raw_at_end is not None:  # undo fit's finalize_variable_values
            for variable, value in zip(self.model.trainable_variables, self._raw_at_end):
                variable.assign(value)
            self._raw_at_end = None


class _SwapBack(keras.callbacks.Callback):
    """`EMAWeights`' second half: the raw weights back in the model at an epoch's end."""

    def __init__(self, owner: EMAWeights):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        owner = self.owner
        if owner._ema_weights_in_model:
            owner._swap_variables()
            owner._ema_weights_in_model = False
        if epoch == self.params["epochs"] - 1 or self.model.stop_training:
            # The last epoch of this fit: keep the weights its end will overwrite.
            owner._raw_at_end = [keras.ops.convert_to_numpy(v)
                                 for v in self.model.trainable_variables]
