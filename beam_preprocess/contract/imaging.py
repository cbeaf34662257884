"""Image normalization for characters and text lines: pure functions over uint8 bitmaps.

The Beam job calls these for every sample, `hccr-predict` calls them for PNG inputs, and the
export code reimplements them in TensorFlow for the serving signature, so the exact rules are
written down here:

`normalize_background(bitmap)` runs first, in both functions below: it turns a photo or scan
(light grey, gradient or noisy background; or white ink on black) into dark ink on a 255
background and leaves a clean bitmap (CASIA's, the synthetic ones) unchanged, byte for byte.
Its statistics are integer histogram counts and its float64 steps are elementwise, so the
TensorFlow version (`trainers/serving/export.py`) gives the same bytes:

0. An image with one gray level has no ink: every pixel becomes 255.
1. Otsu split: the threshold `t` (0..254) that maximises the between-class variance of the
   histogram (the first such level on a tie); pixels `<= t` are the dark class.
2. Polarity: the background is the class holding most of the border pixels. When that is the
   dark class (white on black), the image is inverted (`255 - v`, `t = 254 - t`).
3. Background level and cut: `B` = the (lower) median of the background class (`v > t`),
   `MAD` = the (lower) median of `|v - B|` over that class, and the cut
   `c = max(t + 1, B - 9 * MAD)` (nine MADs are six standard deviations of Gaussian noise).
4. Flat field: a least-squares plane `P(x, y)` through the pixels `>= c` (the confident
   background; flat when they lie on one line), clipped to [1, 255], and every pixel becomes
   `min(255, floor(v * B / P + 0.5))`: a gradient (uneven light) becomes a flat background at
   `B`, below 255 where the background was, so that noise keeps its spread.
5. Levels: steps 1 and 3 again on the flattened image give `t`, `B` and `c`; levels `>= c`
   become 255 and darker ones are stretched so that `B` maps to 255:
   `min(255, (510 * v + B) // (2 * B))` (`v * 255 / B` rounded half up).

A clean bitmap (most of its background exactly 255) has `B = 255` and `MAD = 0`, so `c = 255`,
`P = 255` and the levels table is the identity: it comes back unchanged (a shortcut skips the
steps when most of the border and most of all pixels are 255, with the same result). Ink
darkened by the background's light (`g * v / 255` on a background of level `g`, flat or
not) gets its CASIA gray levels back to within 2 levels; with noise, `c` falls to Otsu's
threshold and the background above it becomes 255 (the ink's lightest halo with it).

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

Gray levels are kept (no binarization): background stays 255, as in the shards.
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


class LineTooWideError(ValueError):
    """A line would be wider than `max_width` once scaled; `width` is the width it would have."""

    def __init__(self, width: int, max_width: int):
        super().__init__(f"the line scales to {width} pixels wide, over the maximum {max_width}")
        self.width = width


def _check_bitmap(bitmap: np.ndarray) -> np.ndarray:
    bitmap = np.asarray(bitmap)
    if bitmap.ndim != 2 or bitmap.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 bitmap. Received dtype {bitmap.dtype}, "
                         f"shape {bitmap.shape}")
    if 0 in bitmap.shape:
        raise EmptyImageError(f"bitmap of shape {bitmap.shape} has no pixels")
    return bitmap


def _otsu_threshold(hist: np.ndarray) -> int | None:
    # Between-class variance up to a constant factor, (S*N0 - N*S0)^2 / (N0 * (N - N0)), with
    # exact int64 sums, so numpy and TensorFlow pick the same level. None: one gray level.
    levels = np.arange(256, dtype=np.int64)
    count0 = np.cumsum(hist)[:255]
    sum0 = np.cumsum(hist * levels)[:255]
    total, total_sum = int(hist.sum()), int((hist * levels).sum())
    split = (count0 > 0) & (count0 < total)
    if not split.any():
        return None
    diff = (total_sum * count0 - total * sum0).astype(np.float64)
    denom = np.where(split, count0 * (total - count0), 1).astype(np.float64)
    score = np.where(split, diff * diff / denom, -1.0)
    return int(np.argmax(score))  # the first maximum


def _lower_median(hist: np.ndarray) -> int:
    """The lower median of the values a histogram counts (hist.sum() > 0)."""
    return int(np.argmax(2 * np.cumsum(hist) >= hist.sum()))


def _background_cut(hist: np.ndarray, t: int) -> tuple[int, int]:
    """(B, c): the background level and the cut of the class above `t` (steps c and d)."""
    levels = np.arange(256, dtype=np.int64)
    background_hist = np.where(levels > t, hist, 0)
    level = _lower_median(background_hist)
    spread = _lower_median(np.bincount(np.abs(levels - level), weights=background_hist,
                                       minlength=256).astype(np.int64))
    return level, max(t + 1, level - 9 * spread)


def _histogram(bitmap: np.ndarray) -> np.ndarray:
    return np.bincount(bitmap.ravel(), minlength=256).astype(np.int64)


def _border(bitmap: np.ndarray) -> np.ndarray:
    return np.concatenate([bitmap[0, :], bitmap[-1, :], bitmap[:, 0], bitmap[:, -1]])


def _background_plane(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The least-squares plane `a + b*x + c*y` through the masked pixels, float64, clipped to
    [1, 255]. Sums are exact int64 and every float64 step is elementwise, so TensorFlow
    (`trainers.serving.export._background_plane`) computes the same values bit for bit."""
    h, w = image.shape
    ys, xs = np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64)
    m = mask.astype(np.int64)
    v = np.where(mask, image, 0).astype(np.int64)
    m_cols, m_rows, v_cols, v_rows = m.sum(0), m.sum(1), v.sum(0), v.sum(1)
    n = float(m_rows.sum())
    sx, sy, sv = float(xs @ m_cols), float(ys @ m_rows), float(v_rows.sum())
    sxx, syy = float((xs * xs) @ m_cols), float((ys * ys) @ m_rows)
    sxy, sxv, syv = float(ys @ (m @ xs)), float(xs @ v_cols), float(ys @ v_rows)
    ys, xs = ys[:, None], xs[None, :]
    mx, my, mv = sx / n, sy / n, sv / n
    vxx, vyy, vxy = sxx / n - mx * mx, syy / n - my * my, sxy / n - mx * my
    cxv, cyv = sxv / n - mx * mv, syv / n - my * mv
    det = vxx * vyy - vxy * vxy
    if det > 1e-6 * vxx * vyy and det > 0.0:
        b = (cxv * vyy - cyv * vxy) / det
        c = (cyv * vxx - cxv * vxy) / det
    else:  # the background pixels lie on one line: a flat background
        b = c = 0.0
    plane = mv + b * (xs.astype(np.float64) - mx) + c * (ys.astype(np.float64) - my)
    return np.clip(plane, 1.0, 255.0)


def normalize_background(bitmap: np.ndarray) -> np.ndarray:
    """Dark ink on a 255 background, whatever the background was (see the module docstring).

    Args:
      bitmap: uint8 (height, width): a CASIA bitmap, a scan or a photo of a character or line.

    Returns:
      uint8 array of the same shape; the bitmap itself (not a copy) when it is already clean.
    """
    bitmap = _check_bitmap(bitmap)
    if _is_clean(bitmap):
        return bitmap
    hist = _histogram(bitmap)
    t = _otsu_threshold(hist)
    if t is None:
        return np.full(bitmap.shape, 255, np.uint8)
    border = _border(bitmap)
    if 2 * int(np.count_nonzero(border <= t)) > border.size:  # white on black
        bitmap, hist, t = 255 - bitmap, hist[::-1], 254 - t
    level, cut = _background_cut(hist, t)
    plane = _background_plane(bitmap, bitmap >= cut)
    flat = np.minimum(255.0, np.floor(bitmap * float(level) / plane + 0.5)).astype(np.uint8)
    hist = _histogram(flat)
    t = _otsu_threshold(hist)
    if t is None:
        return np.full(bitmap.shape, 255, np.uint8)
    level, cut = _background_cut(hist, t)
    levels = np.arange(256, dtype=np.int64)
    table = np.where(levels >= cut, 255, np.minimum(255, (510 * levels + level) // (2 * level)))
    return table.astype(np.uint8)[flat]


def _is_clean(bitmap: np.ndarray) -> bool:
    # A shortcut with the same result as the full rule, for the common case: when most of the
    # border is 255 the light class is the background (t <= 254), and when most pixels are 255
    # so is most of the background class: B = 255, MAD = 0, c = 255, so the plane is the
    # constant 255 and the table the identity.
    border = _border(bitmap)
    return (2 * int(np.count_nonzero(border == 255)) > border.size and
            2 * int(np.count_nonzero(bitmap == 255)) > bitmap.size)


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
    bitmap = normalize_background(_check_bitmap(bitmap))
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
                   ink_threshold: int = INK_THRESHOLD, max_width: int | None = None
                   ) -> np.ndarray:
    """A text-line bitmap at a fixed height: its ink scaled to `height - 2*margin`, padded.

    Args:
      bitmap: uint8 (height, width), dark ink on a 255 background (as in CASIA DGRL files).
      height: output height; the width follows from the ink's aspect ratio.
      margin: blank pixels on every side.
      ink_threshold: pixels below this value are ink.
      max_width: refuse a result wider than this, before allocating it.

    Returns:
      uint8 array of shape (height, nw + 2*margin), background 255.

    Raises:
      EmptyImageError: the bitmap has no ink.
      LineTooWideError: the result would be wider than `max_width`.
    """
    bitmap = normalize_background(_check_bitmap(bitmap))
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
    if max_width is not None and nw + 2 * margin > max_width:
        raise LineTooWideError(nw + 2 * margin, max_width)
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
