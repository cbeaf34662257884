"""Small custom layers shared by the models.

They replace what would otherwise be `Lambda` layers, which `.keras` files can only load with
`safe_mode=False`. Everything here uses `keras.ops`, so it runs on every Keras backend.
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="hccr")
class CollapseHeight(keras.layers.Layer):
    """Turns a feature map into a sequence along its width.

    `(batch, height, width, channels)` becomes `(batch, width, height * channels)`: every
    column of the feature map is one time step. The CRNN reduces the height to 1 first, so
    this is then just a squeeze; merging any remaining rows keeps the layer correct for other
    heights too. The width may be unknown (variable-width text lines).
    """

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "CollapseHeight expects a 4-D input (batch, height, width, channels). "
                f"Received: input_shape={input_shape}"
            )
        batch, height, width, channels = input_shape
        if height is None or channels is None:
            raise ValueError(
                "CollapseHeight needs a known height and channel count. "
                f"Received: input_shape={input_shape}"
            )
        return (batch, width, height * channels)

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        # Width first so that each column becomes one time step.
        columns = ops.transpose(inputs, (0, 2, 1, 3))
        if width is not None:
            # Keep a fixed width static even when the batch size is not (graph tracing for
            # export): an unrolled LSTM needs to know its number of time steps.
            return ops.reshape(columns, (-1, width, height * channels))
        return ops.reshape(columns, (ops.shape(columns)[0], -1, height * channels))
