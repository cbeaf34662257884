"""The seed article's LeNet-5 variant for 28x28 digits: the project's first baseline.

Conv32 - MaxPool - Conv64 - MaxPool - Dense128 - Dense(num_classes), ReLU throughout, with the
article's optional L2 weight decay and Dropout (both off by default, as in its first run).
"""
import keras
from keras import layers

from models import arg_checks


def build_lenet(
    *,
    num_classes,
    input_shape,
    conv_filters=(32, 64),
    kernel_size=5,
    dense_units=128,
    l2=0.0,
    dropout=0.0,
    name="lenet",
):
    """Builds the LeNet-5 variant.

    Args:
        num_classes: number of output classes (10 for digits).
        input_shape: `(height, width, channels)`, e.g. `(28, 28, 1)`; ink 1.0, background 0.0.
        conv_filters: filters of the two convolutions.
        kernel_size: square kernel size of both convolutions ("same" padding, so a 28x28 input
            gives 7x7x64 features before the dense layers).
        dense_units: width of the hidden dense layer.
        l2: L2 factor on every kernel; 0 disables it.
        dropout: dropout rate before the classifier; 0 disables it.
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to float32 logits `(batch, num_classes)`.
    """
    arg_checks.check_num_classes(num_classes)
    input_shape = arg_checks.check_image_shape(input_shape)
    arg_checks.check_positive_int_tuple("conv_filters", conv_filters)
    if len(conv_filters) != 2:
        raise ValueError(
            f"`conv_filters` must hold exactly two values. Received: conv_filters={conv_filters!r}"
        )
    arg_checks.check_positive_int("kernel_size", kernel_size)
    arg_checks.check_positive_int("dense_units", dense_units)
    arg_checks.check_non_negative("l2", l2)
    arg_checks.check_rate("dropout", dropout)
    kernel_regularizer = arg_checks.regularizer(l2)

    # === Layers ===
    images = keras.Input(shape=input_shape, name="image")
    x = images
    for index, filters in enumerate(conv_filters, start=1):
        x = layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            activation="relu",
            kernel_regularizer=kernel_regularizer,
            name=f"conv{index}",
        )(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(
        dense_units, activation="relu", kernel_regularizer=kernel_regularizer, name="dense"
    )(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    # float32 so that the logits stay float32 under mixed precision.
    logits = layers.Dense(
        num_classes, kernel_regularizer=kernel_regularizer, dtype="float32", name="logits"
    )(x)
    return keras.Model(images, logits, name=name)
