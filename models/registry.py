"""Models by name: every preset is a partial application of one generic builder."""
import functools
import inspect

from models.crnn import build_crnn
from models.hccr_resnet import build_hccr_resnet
from models.lenet import build_lenet

_PRESETS = {
    # The seed article's digit baseline.
    "lenet": functools.partial(build_lenet, name="lenet"),
    # For tests only: a forward and backward step takes milliseconds on CPU.
    "hccr_resnet_tiny": functools.partial(
        build_hccr_resnet,
        stem_filters=8,
        stage_filters=(8, 16, 32),
        stage_blocks=(1, 1, 1),
        separable_from_stage=2,
        se_ratio=4,
        embedding_dim=32,
        name="hccr_resnet_tiny",
    ),
    # Fits a ~3 MB INT8 TFLite file at 3755 classes (<= 3.0 M parameters with the head).
    "hccr_resnet_compact": functools.partial(
        build_hccr_resnet,
        stem_filters=32,
        stage_filters=(64, 128, 256, 384),
        stage_blocks=(1, 2, 2, 2),
        separable_from_stage=2,
        se_ratio=8,
        embedding_dim=256,
        name="hccr_resnet_compact",
    ),
    # About 10 M parameters at 3755 classes: plain 3x3 convs in every stage.
    "hccr_resnet_base": functools.partial(
        build_hccr_resnet,
        stem_filters=64,
        stage_filters=(64, 128, 256, 384),
        stage_blocks=(2, 2, 2, 2),
        separable_from_stage=4,
        se_ratio=8,
        embedding_dim=512,
        name="hccr_resnet_base",
    ),
    # For tests only: 32-pixel-high lines, small convs and LSTMs.
    "crnn_tiny": functools.partial(
        build_crnn,
        conv_filters=(8, 16, 32, 32, 32, 32),
        lstm_units=32,
        lstm_layers=2,
        name="crnn_tiny",
    ),
    # The demo's CRNN: trains on a 2-core CPU in minutes (32-pixel lines, ~100 classes). One
    # BiLSTM layer, not two: on the demo's data a second stacked layer stays on CTC's
    # uniform-output plateau far longer (docs/benchmarks.md, "The demo's CRNN").
    "crnn_small": functools.partial(
        build_crnn,
        conv_filters=(16, 32, 48, 48, 64, 64),
        lstm_units=64,
        lstm_layers=1,
        name="crnn_small",
    ),
    "crnn": functools.partial(build_crnn, name="crnn"),
}


def available_models():
    """Names accepted by `build_model`, in registry order.

    Returns:
        A list of preset names.
    """
    return list(_PRESETS)


def _preset(name):
    if name not in _PRESETS:
        raise ValueError(
            f"Unknown model name. Choose one of {available_models()}. Received: name={name!r}"
        )
    return _PRESETS[name]


def model_arguments(name):
    """The builder arguments a preset accepts as overrides, in the builder's order.

    Args:
        name: one of `available_models()`.

    Returns:
        A list of argument names (`num_classes` and `input_shape` are not overrides).
    """
    parameters = inspect.signature(_preset(name).func).parameters
    return [p for p in parameters if p not in ("num_classes", "input_shape")]


def build_model(name, *, num_classes, input_shape, **overrides):
    """Builds a preset by name.

    Args:
        name: one of `available_models()`.
        num_classes: number of classes from the dataset metadata (for CRNNs: the charset size;
            the model adds the CTC blank itself).
        input_shape: `(height, width, channels)`; CRNNs accept `(height, None, channels)`.
        **overrides: builder arguments that replace the preset's, e.g. `l2=1e-4, dropout=0.5,
            bn_momentum=0.9` (see `model_arguments`).

    Returns:
        A `keras.Model` that returns float32 logits.
    """
    preset = _preset(name)
    unknown = [key for key in overrides if key not in model_arguments(name)]
    if unknown:
        raise ValueError(
            f"Model {name!r} takes no argument {unknown[0]!r}; its arguments: "
            f"{', '.join(model_arguments(name))}. Received: {unknown[0]}={overrides[unknown[0]]!r}"
        )
    return preset(num_classes=num_classes, input_shape=tuple(input_shape), **overrides)


def is_sequence_model(name):
    """Whether the preset is a CTC text-line model (outputs per time step) or a classifier."""
    return _preset(name).func is build_crnn
