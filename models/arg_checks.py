"""Argument checks shared by the model builders; every failure names the value it received."""
import keras


def check_positive_int(name, value):
    """Raises ValueError unless `value` is an int >= 1 (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def check_num_classes(num_classes):
    """Raises ValueError unless there are at least two classes."""
    check_positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")


def check_positive_int_tuple(name, values):
    """Raises ValueError unless `values` is a non-empty tuple/list of positive ints."""
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"`{name}` must be a non-empty tuple of ints. Received: {name}={values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Every entry of `{name}` must be a positive integer. Received: {name}={values!r}"
            )


def check_rate(name, value):
    """Raises ValueError unless 0 <= value < 1 (a dropout rate, a BatchNorm momentum)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")


def check_non_negative(name, value):
    """Raises ValueError unless value >= 0 (a regularisation factor)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative number. Received: {name}={value!r}")


def check_image_shape(input_shape, *, allow_variable_width=False):
    """Validates an `(height, width, channels)` image shape.

    Args:
        input_shape: the shape to check.
        allow_variable_width: whether the width may be None (CRNN text lines).

    Returns:
        The shape as a tuple.
    """
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    height, width, channels = input_shape
    sizes = {"height": height, "channels": channels}
    if width is not None or not allow_variable_width:
        sizes["width"] = width
    for label, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"The {label} in `input_shape` must be a positive integer. "
                f"Received: input_shape={input_shape!r}"
            )
    return tuple(input_shape)


def regularizer(l2):
    """An L2 kernel regulariser, or None when `l2` is 0 (keeps configs free of no-op objects)."""
    return keras.regularizers.L2(l2) if l2 else None
