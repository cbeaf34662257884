"""A residual network with squeeze-and-excitation for isolated handwritten characters.

One generic builder, `build_hccr_resnet`; the presets in `models.registry` are partial
applications of it. Layout:

    stem: 3x3 conv at full resolution
    stages: each starts with a stride-2 residual block (the shortcut is a strided 1x1 conv),
        then stride-1 blocks; a block is conv3x3-BN-ReLU-conv3x3-BN-SE, added to the shortcut,
        then ReLU. Stages from `separable_from_stage` on use depthwise-separable 3x3 convs,
        which is where most of the parameters would otherwise sit.
    head: global average pooling, an optional low-dimensional embedding (Dense-BN-ReLU),
        dropout, and a float32 Dense classifier.

The embedding is what keeps the compact preset small: a 3755-way classifier on a 384-wide
feature would alone cost 1.4 M parameters, on a 256-wide embedding 0.96 M. This follows the
spirit of Xiao et al. 2017 ("Building fast and compact convolutional neural networks for
offline handwritten Chinese character recognition", 2.3 MB at 97.1% on ICDAR-2013), which also
shrinks the last layers most.
"""
import keras
from keras import layers

from models import arg_checks


def _conv3x3(filters, stride, separable, kernel_regularizer, name):
    if separable:
        return layers.SeparableConv2D(
            filters,
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            depthwise_regularizer=kernel_regularizer,
            pointwise_regularizer=kernel_regularizer,
            name=name,
        )
    return layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_regularizer=kernel_regularizer,
        name=name,
    )


def _squeeze_excite(x, ratio, name):
    """Channel attention (Hu et al. 2018): rescales each channel by a learned gate in (0, 1)."""
    channels = x.shape[-1]
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    gate = layers.Dense(max(1, channels // ratio), activation="relu", name=f"{name}_reduce")(gate)
    gate = layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


def _residual_block(x, filters, stride, separable, se_ratio, kernel_regularizer, bn_momentum,
                    name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters,
            1,
            strides=stride,
            use_bias=False,
            kernel_regularizer=kernel_regularizer,
            name=f"{name}_shortcut_conv",
        )(x)
        shortcut = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_shortcut_bn")(
            shortcut
        )

    y = _conv3x3(filters, stride, separable, kernel_regularizer, f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv3x3(filters, 1, separable, kernel_regularizer, f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn2")(y)
    if se_ratio:
        y = _squeeze_excite(y, se_ratio, f"{name}_se")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_hccr_resnet(
    *,
    num_classes,
    input_shape,
    stem_filters=32,
    stage_filters=(64, 128, 256, 384),
    stage_blocks=(1, 2, 2, 2),
    separable_from_stage=2,
    se_ratio=8,
    embedding_dim=256,
    l2=1e-4,
    dropout=0.3,
    bn_momentum=0.99,
    name="hccr_resnet",
):
    """Builds a residual + squeeze-and-excitation character classifier.

    Args:
        num_classes: number of character classes (from the dataset metadata, e.g. 3755).
        input_shape: `(height, width, channels)`, e.g. `(64, 64, 1)`; ink 1.0, background 0.0.
            Each stage halves the resolution, so the input must be at least
            `2 ** len(stage_filters)` pixels on each side.
        stem_filters: filters of the full-resolution 3x3 stem convolution.
        stage_filters: filters of each stage.
        stage_blocks: residual blocks in each stage (same length as `stage_filters`).
        separable_from_stage: index of the first stage that uses depthwise-separable 3x3
            convolutions; `len(stage_filters)` means none do.
        se_ratio: channel reduction of the squeeze-and-excitation gate; 0 disables SE.
        embedding_dim: width of the Dense-BN-ReLU embedding before the classifier; None feeds
            the pooled features straight to the classifier.
        l2: L2 factor on every convolution and dense kernel; 0 disables it.
        dropout: dropout rate before the classifier; 0 disables it.
        bn_momentum: momentum of every BatchNormalization's moving statistics (Keras'
            default 0.99); lower values follow the weights faster in short runs.
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to float32 logits `(batch, num_classes)`.
    """
    arg_checks.check_num_classes(num_classes)
    input_shape = arg_checks.check_image_shape(input_shape)
    arg_checks.check_positive_int("stem_filters", stem_filters)
    arg_checks.check_positive_int_tuple("stage_filters", stage_filters)
    arg_checks.check_positive_int_tuple("stage_blocks", stage_blocks)
    if len(stage_filters) != len(stage_blocks):
        raise ValueError(
            "`stage_filters` and `stage_blocks` must have the same length. "
            f"Received: stage_filters={stage_filters!r}, stage_blocks={stage_blocks!r}"
        )
    if (
        isinstance(separable_from_stage, bool)
        or not isinstance(separable_from_stage, int)
        or not 0 <= separable_from_stage <= len(stage_filters)
    ):
        raise ValueError(
            f"`separable_from_stage` must be an int in [0, {len(stage_filters)}]. "
            f"Received: separable_from_stage={separable_from_stage!r}"
        )
    if se_ratio != 0:
        arg_checks.check_positive_int("se_ratio", se_ratio)
    if embedding_dim is not None:
        arg_checks.check_positive_int("embedding_dim", embedding_dim)
    arg_checks.check_non_negative("l2", l2)
    arg_checks.check_rate("dropout", dropout)
    arg_checks.check_rate("bn_momentum", bn_momentum)
    min_side = 2 ** len(stage_filters)
    if min(input_shape[:2]) < min_side:
        raise ValueError(
            f"With {len(stage_filters)} stride-2 stages the input must be at least "
            f"{min_side}x{min_side}. Received: input_shape={input_shape!r}"
        )
    kernel_regularizer = arg_checks.regularizer(l2)

    # === Layers ===
    images = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(
        stem_filters,
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=kernel_regularizer,
        name="stem_conv",
    )(images)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)

    for stage, (filters, blocks) in enumerate(zip(stage_filters, stage_blocks, strict=True)):
        for block in range(blocks):
            x = _residual_block(
                x,
                filters,
                stride=2 if block == 0 else 1,
                separable=stage >= separable_from_stage,
                se_ratio=se_ratio,
                kernel_regularizer=kernel_regularizer,
                bn_momentum=bn_momentum,
                name=f"stage{stage}_block{block}",
            )

    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if embedding_dim is not None:
        x = layers.Dense(
            embedding_dim, use_bias=False, kernel_regularizer=kernel_regularizer, name="embedding"
        )(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name="embedding_bn")(x)
        x = layers.ReLU(name="embedding_relu")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    # float32 so that the logits stay float32 under mixed precision.
    logits = layers.Dense(
        num_classes, kernel_regularizer=kernel_regularizer, dtype="float32", name="logits"
    )(x)
    return keras.Model(images, logits, name=name)
