"""Image normalization for characters and text lines: pure functions over uint8 bitmaps.

The Beam job calls these for every sample, `hccr-predict` calls them for PNG inputs, and the
export code reimplements them in TensorFlow for the serving signature, so the exact rules are
written down here:

`normalize_char(bitmap, size=64, margin=4, ink_threshold=250)`:

1. Ink is every pixel `< ink_threshold` (CASIA bitmaps are dark ink on a 255 background; the
   faint anti-aliased halo at 250..254 is not ink). Crop the bitmap to the bounding box of its
   ink: rows `top..bottom-1`, columns `left..right-1`, so the crop is `h x w`.
2. Scale factor `s = (size - 2*margin) / max(h, w)`; the resized ink is
   `nh = max(1, floor(h*s + 0.5))` by `nw = max(1, floor(w*s + 0.5))` pixels (aspect kept; the
   longer side becomes exactly `size - 2*margin`, small characters are scaled up).
3. Resize the crop with bilinear interpolation, antialiased when shrinking (PIL's
   `Image.resize(..., Image.BILINEAR, box=crop)`, which widens the filter support by the
   shrink factor), rounded to uint8. In TensorFlow,
   `tf.image.resize(crop, (nh, nw), "bilinear", antialias=True)` then rounding is the same
   filter but not bit-exact: on 300 real CASIA samples the 64x64 results differed by 0.045 gray
   levels on average, at most 4 levels for 99.9% of pixels (28 at worst, on stroke edges).
4. Paste the result on a `size x size` canvas of 255 at row `(size - nh) // 2`, column
   `(size - nw) // 2`.

`normalize_line(bitmap, height=64, margin=4, ink_threshold=250)`: the same crop; then the crop
is scaled to height `height - 2*margin` (`nw = max(1, floor(w*s + 0.5))`, `s = (height -
2*margin) / h`) and padded with 255 by `margin` pixels on every side: the result is `height` x
`nw + 2*margin`.

Gray levels are kept (no binarization, no inversion): background stays 255, as in the shards.
No Python code runs per pixel: numpy finds the ink box and PIL resizes (about 50-70 µs for a
typical 80x70 CASIA bitmap on one core).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

DEFAULT_SIZE = 64
DEFAULT_MARGIN = 4
INK_THRESHOLD = 250


class EmptyImageError(ValueError):
    """The bitmap has no ink pixel (nothing darker than the ink threshold)."""


def _check_bitmap(bitmap: np.ndarray) -> np.ndarray:
    bitmap = np.asarray(bitmap)
    if bitmap.ndim != 2 or bitmap.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 bitmap. Received dtype {bitmap.dtype}, "
                         f"shape {bitmap.shape}")
    if 0 in bitmap.shape:
        raise EmptyImageError(f"bitmap of shape {bitmap.shape} has no pixels")
    return bitmap


def ink_bbox(bitmap: np.ndarray, ink_threshold: int = INK_THRESHOLD
             ) -> tuple[int, int, int, int] | None:
    """Bounding box of the ink as (top, bottom, left, right), bottom/right exclusive.

    Returns None when no pixel is darker than `ink_threshold`.
    """
    ink = bitmap < ink_threshold
    rows = ink.any(axis=1)
    top = int(rows.argmax())
    if not rows[top]:
        return None
    cols = ink.any(axis=0)
    bottom = len(rows) - int(rows[::-1].argmax())
    left = int(cols.argmax())
    right = len(cols) - int(cols[::-1].argmax())
    return top, bottom, left, right


def _round_size(length: int, scale: float) -> int:
    return max(1, int(np.floor(length * scale + 0.5)))


def _resize(bitmap: np.ndarray, box: tuple[int, int, int, int], out_h: int, out_w: int
            ) -> np.ndarray:
    top, bottom, left, right = box
    image = Image.frombuffer("L", (bitmap.shape[1], bitmap.shape[0]),
                             np.ascontiguousarray(bitmap), "raw", "L", 0, 1)
    resized = image.resize((out_w, out_h), Image.BILINEAR, box=(left, top, right, bottom))
    return np.frombuffer(resized.tobytes(), np.uint8).reshape(out_h, out_w)  # faster than asarray


def normalize_char(bitmap: np.ndarray, size: int = DEFAULT_SIZE, margin: int = DEFAULT_MARGIN,
                   ink_threshold: int = INK_THRESHOLD) -> np.ndarray:
    """A character bitmap as a `size x size` image: its ink, aspect kept, centred with a margin.

    Args:
      bitmap: uint8 (height, width), dark ink on a 255 background (as in CASIA GNT files).
      size: side of the output square.
      margin: blank pixels kept on each side of the longer ink side.
      ink_threshold: pixels below this value are ink.

    Returns:
      uint8 array of shape (size, size), background 255.

    Raises:
      EmptyImageError: the bitmap has no ink.
      ValueError: the bitmap is not 2-D uint8, or `size - 2*margin < 1`.
    """
    bitmap = _check_bitmap(bitmap)
    inner = size - 2 * margin
    if inner < 1:
        raise ValueError(f"size - 2*margin must be at least 1. Received size={size}, "
                         f"margin={margin}")
    box = ink_bbox(bitmap, ink_threshold)
    if box is None:
        raise EmptyImageError(f"no ink (no pixel < {ink_threshold}) in a "
                              f"{bitmap.shape[1]}x{bitmap.shape[0]} bitmap")
    top, bottom, left, right = box
    h, w = bottom - top, right - left
    scale = inner / max(h, w)
    nh, nw = min(inner, _round_size(h, scale)), min(inner, _round_size(w, scale))
    out = np.full((size, size), 255, dtype=np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    out[y:y + nh, x:x + nw] = _resize(bitmap, box, nh, nw)
    return out


def normalize_line(bitmap: np.ndarray, height: int = DEFAULT_SIZE, margin: int = DEFAULT_MARGIN,
                   ink_threshold: int = INK_THRESHOLD) -> np.ndarray:
    """A text-line bitmap at a fixed height: its ink scaled to `height - 2*margin`, padded.

    Args:
      bitmap: uint8 (height, width), dark ink on a 255 background (as in CASIA DGRL files).
      height: output height; the width follows from the ink's aspect ratio.
      margin: blank pixels on every side.
      ink_threshold: pixels below this value are ink.

    Returns:
      uint8 array of shape (height, nw + 2*margin), background 255.

    Raises:
      EmptyImageError: the bitmap has no ink.
    """
    bitmap = _check_bitmap(bitmap)
    inner = height - 2 * margin
    if inner < 1:
        raise ValueError(f"height - 2*margin must be at least 1. Received height={height}, "
                         f"margin={margin}")
    box = ink_bbox(bitmap, ink_threshold)
    if box is None:
        raise EmptyImageError(f"no ink (no pixel < {ink_threshold}) in a "
                              f"{bitmap.shape[1]}x{bitmap.shape[0]} line bitmap")
    top, bottom, left, right = box
    scale = inner / (bottom - top)
    nw = _round_size(right - left, scale)
    out = np.full((height, nw + 2 * margin), 255, dtype=np.uint8)
    out[margin:margin + inner, margin:margin + nw] = _resize(bitmap, box, inner, nw)
    return out


def compose_line(glyphs: Sequence[np.ndarray], rng: np.random.Generator, *,
                 char_height: int = 64, ink_threshold: int = INK_THRESHOLD) -> np.ndarray:
    """Writes isolated character bitmaps side by side into one text-line bitmap.

    Used to synthesize text lines from GNT samples when no DGRL page is at hand. Each glyph is
    cropped to its ink, scaled so its longer side is about `char_height` (times a random 0.8 to
    1.05), shifted vertically by a little jitter around the line's centre, and followed by a
    random gap of 5% to 30% of `char_height`. Overlapping ink is combined with `min`.

    Args:
      glyphs: uint8 bitmaps with ink (background 255); glyphs without ink are skipped.
      rng: the only source of randomness (same generator state, same line).
      char_height: nominal character size in pixels.

    Returns:
      uint8 (H, W) bitmap of the line, background 255 (not yet normalized: pass it to
      `normalize_line`).

    Raises:
      EmptyImageError: no glyph has ink.
    """
    pieces = []
    for glyph in glyphs:
        glyph = _check_bitmap(glyph)
        box = ink_bbox(glyph, ink_threshold)
        if box is None:
            continue
        top, bottom, left, right = box
        h, w = bottom - top, right - left
        scale = char_height * rng.uniform(0.8, 1.05) / max(h, w)
        pieces.append((_resize(glyph, box, _round_size(h, scale), _round_size(w, scale)),
                       rng.normal(0.0, 0.04 * char_height),
                       int(char_height * rng.uniform(0.05, 0.3))))
    if not pieces:
        raise EmptyImageError("none of the glyphs has ink")
    canvas_h = int(char_height * 1.5)
    width = sum(p.shape[1] + gap for p, _, gap in pieces)
    line = np.full((canvas_h, width), 255, dtype=np.uint8)
    x = 0
    for piece, shift, gap in pieces:
        h, w = piece.shape
        y = int(np.clip(round((canvas_h - h) / 2 + shift), 0, canvas_h - h))
        np.minimum(line[y:y + h, x:x + w], piece, out=line[y:y + h, x:x + w])
        x += w + gap
    box = ink_bbox(line, ink_threshold)
    if box is None:  # every glyph's ink was faint after resizing
        raise EmptyImageError("the composed line has no ink")
    top, bottom, left, right = box
    return np.ascontiguousarray(line[top:bottom, left:right])
