"""Parameter, FLOP and size accounting for the presets (what `python -m models` prints).

FLOPs are computed analytically from each layer's input and output shapes, counting one
multiply-accumulate as 2 FLOPs, for the layers that dominate the cost: Conv2D, DepthwiseConv2D,
SeparableConv2D, Dense and LSTM (also inside Bidirectional). BatchNorm, activations, pooling,
additions and the LSTM's element-wise gate arithmetic are left out (a few percent at most), and
so are biases. Sizes are parameters x 4 bytes (float32) and parameters x 1 byte (INT8), which
is what a weight file holds before format overhead; TFLite folds BatchNorm into the
convolutions, so the INT8 figure is a slight over-estimate of the weights it stores.
"""
import math

from keras import layers

from models.registry import available_models, build_model, is_sequence_model


def _known(shape, layer):
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(
            f"FLOPs need static shapes; build the model with a fixed input width. "
            f"Received: layer {layer.name!r} with shape {tuple(shape)}"
        )
    return dims


def _lstm_flops(lstm, input_shape):
    steps, features = _known(input_shape, lstm)
    units = lstm.units
    # Four gates, each a matmul over [input, previous hidden state].
    return steps * 2 * 4 * units * (features + units)


def layer_flops(layer):
    """FLOPs of one forward pass of `layer` for one sample (see the module docstring).

    Args:
        layer: a layer of a built functional model (called once, so its shapes are known).

    Returns:
        FLOPs as an int; 0 for layers that are not counted.
    """
    if isinstance(layer, layers.SeparableConv2D):
        height, width, out_channels = _known(layer.output.shape, layer)
        in_channels = layer.input.shape[-1]
        kernel = math.prod(layer.kernel_size)
        depthwise = height * width * in_channels * layer.depth_multiplier * kernel
        pointwise = height * width * in_channels * layer.depth_multiplier * out_channels
        return 2 * (depthwise + pointwise)
    if isinstance(layer, layers.DepthwiseConv2D):
        height, width, out_channels = _known(layer.output.shape, layer)
        return 2 * height * width * out_channels * math.prod(layer.kernel_size)
    if isinstance(layer, layers.Conv2D):
        height, width, out_channels = _known(layer.output.shape, layer)
        in_channels = layer.input.shape[-1] // layer.groups
        return 2 * height * width * out_channels * in_channels * math.prod(layer.kernel_size)
    if isinstance(layer, layers.Dense):
        output_dims = _known(layer.output.shape, layer)
        positions = math.prod(output_dims[:-1])
        return 2 * positions * layer.input.shape[-1] * layer.units
    if isinstance(layer, layers.Bidirectional):
        return _lstm_flops(layer.forward_layer, layer.input.shape) + _lstm_flops(
            layer.backward_layer, layer.input.shape
        )
    if isinstance(layer, layers.LSTM):
        return _lstm_flops(layer, layer.input.shape)
    return 0


def model_flops(model):
    """FLOPs per sample of a functional model with static input shape.

    Args:
        model: a built functional `keras.Model`.

    Returns:
        Total FLOPs for one sample, as an int.
    """
    return sum(layer_flops(layer) for layer in model.layers)


def preset_table(num_classes=3755, image_size=64, line_num_classes=None, line_width=256):
    """Builds every preset and measures it.

    Args:
        num_classes: classes of the character classifiers.
        image_size: side of the square classifier input.
        line_num_classes: charset size of the text-line models; default `num_classes + 100`
            (the level-1 set plus punctuation, digits and Latin letters found in lines).
        line_width: width of the text-line input used for the FLOP count (parameters do not
            depend on it); the height is `image_size`.

    Returns:
        One dict per preset: name, input, classes, params, flops, float32_bytes, int8_bytes.
    """
    if line_num_classes is None:
        line_num_classes = num_classes + 100
    rows = []
    for name in available_models():
        if is_sequence_model(name):
            classes, input_shape = line_num_classes, (image_size, line_width, 1)
        else:
            classes, input_shape = num_classes, (image_size, image_size, 1)
        model = build_model(name, num_classes=classes, input_shape=input_shape)
        params = model.count_params()
        rows.append(
            {
                "name": name,
                "input": "x".join(str(d) for d in input_shape[:2]),
                "classes": classes,
                "params": params,
                "flops": model_flops(model),
                "float32_bytes": params * 4,
                "int8_bytes": params,
            }
        )
    return rows


def format_table(rows):
    """Formats `preset_table` rows as a fixed-width text table."""
    header = (
        f"{'model':<22}{'input HxW':>11}{'classes':>9}{'params':>13}"
        f"{'MFLOPs/sample':>15}{'float32 MB':>12}{'int8 MB':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['name']:<22}{row['input']:>11}{row['classes']:>9}{row['params']:>13,}"
            f"{row['flops'] / 1e6:>15,.1f}{row['float32_bytes'] / 1e6:>12.2f}"
            f"{row['int8_bytes'] / 1e6:>10.2f}"
        )
    lines.append(
        "FLOPs: analytic, 2 per multiply-accumulate in Conv2D/DepthwiseConv2D/SeparableConv2D/"
        "Dense/LSTM; BatchNorm, activations, pooling and biases excluded. "
        "MB = 10^6 bytes = params x 4 (float32) or x 1 (int8), before file-format overhead. "
        "CRNN classes = charset size (the model adds the CTC blank)."
    )
    return "\n".join(lines)
