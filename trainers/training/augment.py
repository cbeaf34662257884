"""Data augmentation for training batches, vectorized over the batch (tf.data, CPU).

The seed's list, each switchable through the config (a zero range switches an effect off):
rotation (+-15 degrees), scale (0.9-1.1), shifts, Gaussian noise (sigma 0.05), brightness
(+-20 %) and elastic deformation; and cutout (one erased square per image, off by default).
Rotation, scale, shift and the elastic field are composed into one sampling grid, so an image
is resampled once (bilinear) whatever is switched on.

Images follow the training convention: float32 `(batch, height, width, 1)`, ink 1.0,
background 0.0; pixels sampled from outside the image are background. Every random draw is
stateless, keyed by `seed` (the input pipeline draws one key per batch from TensorFlow's
globally seeded random stream), so a batch and its key give the same result every time.
Evaluation data never comes through here.
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transformations (see the `aug_*` fields of `configs.Config`)."""
    rotation: float = 15.0  # degrees, +-
    scale_min: float = 0.9
    scale_max: float = 1.1
    shift: float = 0.1  # fraction of the shorter image side, +-
    noise_std: float = 0.05
    brightness: float = 0.2  # additive, +- fraction of the value range
    elastic_alpha: float = 2.0  # pixels
    elastic_cell: int = 8  # pixels between independent displacement vectors
    cutout: float = 0.0  # side of the erased square, fraction of the image side; 0: off

    @classmethod
    def from_config(cls, config) -> AugmentParams:
        return cls(rotation=config.aug_rotation, scale_min=config.aug_scale_min,
                   scale_max=config.aug_scale_max, shift=config.aug_shift,
                   noise_std=config.aug_noise_std, brightness=config.aug_brightness,
                   elastic_alpha=config.aug_elastic_alpha, elastic_cell=config.aug_elastic_cell,
                   cutout=config.aug_cutout)

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.shift or self.elastic_alpha
                    or self.scale_min != 1.0 or self.scale_max != 1.0)


def _bilinear_sample(images: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor) -> tf.Tensor:
    """Samples `images` (B, H, W, C) at float coordinates (B, H, W); outside is 0."""
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    # One pixel of background around the image: coordinates outside clamp onto it.
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    ys = tf.clip_by_value(ys + 1.0, 0.0, tf.cast(height + 1, tf.float32))
    xs = tf.clip_by_value(xs + 1.0, 0.0, tf.cast(width + 1, tf.float32))
    y0 = tf.floor(ys)
    x0 = tf.floor(xs)
    wy = (ys - y0)[..., None]
    wx = (xs - x0)[..., None]
    y0 = tf.cast(y0, tf.int32)
    x0 = tf.cast(x0, tf.int32)
    y1 = tf.minimum(y0 + 1, height + 1)
    x1 = tf.minimum(x0 + 1, width + 1)
    # One gather of the four neighbours from the flattened batch.
    row = width + 2
    base = (tf.range(batch) * (height + 2) * row)[:, None, None]
    corners = tf.stack([base + y0 * row + x0, base + y0 * row + x1,
                        base + y1 * row + x0, base + y1 * row + x1])
    values = tf.gather(tf.reshape(padded, [-1, channels]), corners)  # (4, B, H, W, C)
    top = values[0] * (1.0 - wx) + values[1] * wx
    bottom = values[2] * (1.0 - wx) + values[3] * wx
    return top * (1.0 - wy) + bottom * wy


def _uniform(seed, shape, low, high, index):
    return tf.random.stateless_uniform(shape, seed=seed + [0, index], minval=low, maxval=high)


def geometric_transform(images: tf.Tensor, params: AugmentParams, seed) -> tf.Tensor:
    """Random rotation, scale, shift and elastic deformation of a batch, in one resampling.

    Args:
      images: float32 `(batch, height, width, channels)`, background 0.
      params: the ranges.
      seed: int32/int64 tensor of shape `[2]` (stateless RNG key).

    Returns:
      The transformed batch, same shape and dtype.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    seed = tf.cast(seed, tf.int64)
    angle = _uniform(seed, [batch], -1.0, 1.0, 1) * (params.rotation * math.pi / 180.0)
    scale = _uniform(seed, [batch], params.scale_min, params.scale_max, 2)
    max_shift = params.shift * tf.minimum(h, w)
    shift_x = _uniform(seed, [batch], -1.0, 1.0, 3) * max_shift
    shift_y = _uniform(seed, [batch], -1.0, 1.0, 4) * max_shift

    # For each output pixel, the input point it comes from: the inverse of
    # "scale and rotate about the centre, then shift".
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")  # (H, W)
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    dy = ys[None] - cy - shift_y[:, None, None]
    dx = xs[None] - cx - shift_x[:, None, None]
    cos = (tf.cos(angle) / scale)[:, None, None]
    sin = (tf.sin(angle) / scale)[:, None, None]
    src_x = cos * dx + sin * dy + cx
    src_y = -sin * dx + cos * dy + cy

    if params.elastic_alpha:
        # A coarse grid of random displacements, upsampled smoothly to every pixel.
        cell = float(params.elastic_cell)
        grid_h = tf.cast(tf.math.ceil(h / cell), tf.int32) + 1
        grid_w = tf.cast(tf.math.ceil(w / cell), tf.int32) + 1
        coarse = tf.random.stateless_uniform([batch, grid_h, grid_w, 2], seed=seed + [0, 5],
                                             minval=-1.0, maxval=1.0)
        field = tf.image.resize(coarse, [height, width], method="bicubic") * params.elastic_alpha
        src_y += field[..., 0]
        src_x += field[..., 1]
    return _bilinear_sample(images, src_y, src_x)


def photometric_transform(images: tf.Tensor, params: AugmentParams, seed) -> tf.Tensor:
    """Random brightness (per image) and Gaussian noise (per pixel), clipped to [0, 1]."""
    seed = tf.cast(seed, tf.int64)
    batch = tf.shape(images)[0]
    if params.brightness:
        delta = _uniform(seed, [batch], -params.brightness, params.brightness, 6)
        images = images + delta[:, None, None, None]
    if params.noise_std:
        images = images + params.noise_std * tf.random.stateless_normal(
            tf.shape(images), seed=seed + [0, 7])
    return tf.clip_by_value(images, 0.0, 1.0)


def cutout_transform(images: tf.Tensor, params: AugmentParams, seed) -> tf.Tensor:
    """Erases one square per image to background (cutout, DeVries & Taylor 2017).

    The square's side is `params.cutout` of the image's shorter side; its centre is uniform over
    the image, so near an edge only part of it falls inside (as in the paper). A writer who
    leaves out or merges a stroke is what this imitates: the model must not hang on any one part.
    """
    seed = tf.cast(seed, tf.int64)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    side = params.cutout * tf.cast(tf.minimum(height, width), tf.float32)
    cy = _uniform(seed, [batch], 0.0, 1.0, 8) * tf.cast(height, tf.float32)
    cx = _uniform(seed, [batch], 0.0, 1.0, 9) * tf.cast(width, tf.float32)
    rows = tf.cast(tf.range(height), tf.float32)[None, :] + 0.5
    cols = tf.cast(tf.range(width), tf.float32)[None, :] + 0.5
    inside_rows = tf.abs(rows - cy[:, None]) < side / 2  # (B, H)
    inside_cols = tf.abs(cols - cx[:, None]) < side / 2  # (B, W)
    erased = tf.logical_and(inside_rows[:, :, None], inside_cols[:, None, :])[..., None]
    return tf.where(erased, tf.zeros_like(images), images)


def augment_batch(images: tf.Tensor, params: AugmentParams, seed) -> tf.Tensor:
    """All enabled augmentations of a training batch.

    Args:
      images: float32 `(batch, height, width, 1)`, ink 1.0, background 0.0.
      params: the ranges (`AugmentParams.from_config(config)`).
      seed: `[2]` integer tensor; the same seed gives the same result.

    Returns:
      The augmented batch, same shape, values in [0, 1].
    """
    if params.geometric:
        images = geometric_transform(images, params, seed)
    if params.cutout:
        images = cutout_transform(images, params, seed)
    if params.brightness or params.noise_std:
        images = photometric_transform(images, params, seed)
    return images
