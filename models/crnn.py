"""CRNN (Shi et al. 2015) for handwritten text lines, trained with CTC.

A CNN turns a fixed-height, variable-width line image into one feature vector per group of
`CRNN_WIDTH_DOWNSAMPLE` columns; bidirectional LSTMs read that sequence; a float32 Dense layer
gives `num_classes + 1` logits per time step.

CTC convention (the trainer relies on it): class 0 is the CTC blank and charset character i
has class id i + 1, so the model has `len(charset) + 1` outputs. See `models.ctc`.

CNN layout, for an input height H (a multiple of 16):

    conv f0, pool 2x2      -> H/2,  W/2
    conv f1, pool 2x2      -> H/4,  W/4
    conv f2, conv f3, pool 2x1 -> H/8,  W/4   (height only: keeps horizontal resolution
    conv f4, conv f5, pool 2x1 -> H/16, W/4    for narrow strokes and short characters)
    conv f5 with an (H/16)x1 kernel, valid -> 1, W/4
    CollapseHeight         -> sequence of W/4 steps

Every convolution is followed by BatchNorm and ReLU.

`unroll=True` unrolls the LSTMs at a fixed width: the TFLite converter (TensorFlow 2.17)
only quantises a BiLSTM to full INT8 when it is unrolled; a symbolic loop crashes it (see
trainers/serving/export.py).
"""
import keras
from keras import layers

from models import arg_checks
from models.layers import CollapseHeight

# The CNN halves the width twice: time steps = width // CRNN_WIDTH_DOWNSAMPLE.
CRNN_WIDTH_DOWNSAMPLE = 4
# The CNN halves the height four times before collapsing it: heights must be multiples of 16.
CRNN_HEIGHT_MULTIPLE = 16


def crnn_time_steps(width):
    """Number of CTC time steps (logit frames) a CRNN produces for an image of this width.

    Args:
        width: image width in pixels.

    Returns:
        `width // 4`: the two 2x2 poolings ("valid" padding) floor-divide the width by 4.
        Use it for the CTC `logit_length` of a padded batch (per sample, from each unpadded
        width) and to check that a label fits (CTC needs at least one frame per character,
        plus one between repeated characters).
    """
    arg_checks.check_positive_int("width", width)
    return width // CRNN_WIDTH_DOWNSAMPLE


def _conv_bn_relu(x, filters, kernel_size, padding, kernel_regularizer, bn_momentum, name):
    x = layers.Conv2D(
        filters,
        kernel_size,
        padding=padding,
        use_bias=False,
        kernel_regularizer=kernel_regularizer,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_crnn(
    *,
    num_classes,
    input_shape,
    conv_filters=(64, 128, 256, 256, 512, 512),
    lstm_units=256,
    lstm_layers=2,
    unroll=False,
    l2=0.0,
    dropout=0.0,
    bn_momentum=0.99,
    name="crnn",
):
    """Builds a CNN + BiLSTM text-line recogniser for CTC.

    Args:
        num_classes: charset size, `len(charset)`; the model outputs `num_classes + 1` logits
            per step (index 0 is the CTC blank).
        input_shape: `(height, None, channels)` for variable-width lines, or
            `(height, width, channels)`; height a multiple of 16 (e.g. 64, or 32 in tests).
            Ink 1.0, background 0.0, so right padding with zeros is blank paper.
        conv_filters: filters of the six 3x3 convolutions (the height-collapsing conv reuses
            the last value).
        lstm_units: units of each LSTM direction.
        lstm_layers: number of stacked bidirectional LSTM layers.
        unroll: unroll the LSTMs (needs a fixed width; for full-INT8 TFLite export).
        l2: L2 factor on convolution and dense kernels; 0 disables it.
        dropout: dropout rate on the sequence features before each BiLSTM; 0 disables it.
        bn_momentum: momentum of every BatchNormalization's moving statistics (Keras'
            default 0.99); lower values follow the weights faster in short runs.
        name: model name.

    Returns:
        A functional `keras.Model` mapping images `(batch, height, width, channels)` to float32
        logits `(batch, width // 4, num_classes + 1)`.
    """
    arg_checks.check_num_classes(num_classes)
    input_shape = arg_checks.check_image_shape(input_shape, allow_variable_width=True)
    height, width, _ = input_shape
    if height % CRNN_HEIGHT_MULTIPLE:
        raise ValueError(
            f"The CRNN input height must be a multiple of {CRNN_HEIGHT_MULTIPLE}. "
            f"Received: input_shape={input_shape!r}"
        )
    if width is not None and width < CRNN_WIDTH_DOWNSAMPLE:
        raise ValueError(
            f"The CRNN input width must be at least {CRNN_WIDTH_DOWNSAMPLE}. "
            f"Received: input_shape={input_shape!r}"
        )
    if unroll and width is None:
        raise ValueError(
            "An unrolled CRNN needs a fixed width, e.g. input_shape=(64, 256, 1). "
            f"Received: input_shape={input_shape!r}"
        )
    arg_checks.check_positive_int_tuple("conv_filters", conv_filters)
    if len(conv_filters) != 6:
        raise ValueError(
            f"`conv_filters` must hold six values. Received: conv_filters={conv_filters!r}"
        )
    arg_checks.check_positive_int("lstm_units", lstm_units)
    arg_checks.check_positive_int("lstm_layers", lstm_layers)
    arg_checks.check_non_negative("l2", l2)
    arg_checks.check_rate("dropout", dropout)
    arg_checks.check_rate("bn_momentum", bn_momentum)
    kernel_regularizer = arg_checks.regularizer(l2)

    # === Layers ===
    images = keras.Input(shape=input_shape, name="image")
    x = images
    pools = {0: (2, 2), 1: (2, 2), 3: (2, 1), 5: (2, 1)}
    for index, filters in enumerate(conv_filters):
        x = _conv_bn_relu(x, filters, 3, "same", kernel_regularizer, bn_momentum, f"conv{index}")
        if index in pools:
            x = layers.MaxPooling2D(pools[index], name=f"pool{index}")(x)
    # A learned (height x 1) kernel, rather than pooling, decides what each column keeps.
    x = _conv_bn_relu(
        x,
        conv_filters[-1],
        (height // CRNN_HEIGHT_MULTIPLE, 1),
        "valid",
        kernel_regularizer,
        bn_momentum,
        "collapse",
    )
    x = CollapseHeight(name="to_sequence")(x)

    for index in range(lstm_layers):
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout{index}")(x)
        x = layers.Bidirectional(
            layers.LSTM(lstm_units, return_sequences=True, unroll=unroll, name=f"lstm{index}"),
            name=f"bilstm{index}",
        )(x)
    # float32 so that the logits stay float32 under mixed precision (CTC needs float32).
    logits = layers.Dense(
        num_classes + 1, kernel_regularizer=kernel_regularizer, dtype="float32", name="logits"
    )(x)
    return keras.Model(images, logits, name=name)
