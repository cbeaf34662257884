import numpy as np
import pytest

from beam_preprocess.contract import imaging


def _blank(h, w):
    return np.full((h, w), 255, np.uint8)


def test_char_ink_box_is_centred_with_margin_and_aspect_kept():
    bitmap = _blank(100, 120)
    bitmap[10:90, 30:70] = 0  # ink box 80 high, 40 wide
    out = imaging.normalize_char(bitmap, size=64, margin=4)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    box = imaging.ink_bbox(out)
    top, bottom, left, right = box
    assert bottom - top == 56  # the longer side fills size - 2*margin
    assert right - left == 28  # aspect 2:1 kept
    assert (top, 64 - bottom) == (4, 4)
    assert abs(left - (64 - right)) <= 1  # centred
    assert out[0].min() == 255 and out[:, 0].min() == 255  # margins are background


def test_char_small_ink_is_scaled_up_and_thin_strokes_survive():
    bitmap = _blank(30, 30)
    bitmap[10, 5:25] = 0  # a one-pixel horizontal stroke
    out = imaging.normalize_char(bitmap, size=32, margin=2)
    top, bottom, left, right = imaging.ink_bbox(out)
    assert right - left == 28 and bottom - top >= 1
    assert out.min() < 128


def test_char_background_stays_255_and_gray_levels_are_kept():
    bitmap = _blank(40, 40)
    bitmap[5:35, 5:35] = 100
    out = imaging.normalize_char(bitmap, size=64, margin=4)
    assert out.max() == 255
    assert np.median(out[10:54, 10:54]) == 100  # no binarization or inversion


def test_char_faint_halo_is_not_ink():
    bitmap = _blank(50, 50)
    bitmap[:, :] = 252  # anti-aliasing level, above the ink threshold
    bitmap[20:30, 20:30] = 0
    assert imaging.ink_bbox(bitmap) == (20, 30, 20, 30)


def test_empty_bitmap_raises():
    with pytest.raises(imaging.EmptyImageError, match="no ink"):
        imaging.normalize_char(_blank(20, 20))
    with pytest.raises(imaging.EmptyImageError):
        imaging.normalize_line(_blank(20, 200))
    assert imaging.ink_bbox(_blank(3, 3)) is None


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="2-D uint8"):
        imaging.normalize_char(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="margin"):
        imaging.normalize_char(np.zeros((4, 4), np.uint8), size=8, margin=4)


def test_normalize_char_is_deterministic_and_pure():
    rng = np.random.default_rng(0)
    bitmap = rng.integers(0, 256, size=(77, 51), dtype=np.uint8)
    before = bitmap.copy()
    a = imaging.normalize_char(bitmap)
    b = imaging.normalize_char(bitmap)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(bitmap, before)


def test_line_height_is_fixed_and_width_follows_aspect():
    bitmap = _blank(120, 1000)
    bitmap[20:100, 50:850] = 0  # ink 80 x 800
    out = imaging.normalize_line(bitmap, height=64, margin=4)
    assert out.shape == (64, 560 + 8)
    assert imaging.ink_bbox(out) == (4, 60, 4, 564)


def test_compose_line_is_deterministic_and_ordered():
    glyphs = []
    for width in (10, 20, 30):
        g = _blank(40, 40)
        g[5:35, 5:5 + width] = 0
        glyphs.append(g)
    a = imaging.compose_line(glyphs, np.random.default_rng(1), char_height=32)
    b = imaging.compose_line(glyphs, np.random.default_rng(1), char_height=32)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape[1] > 3 * 16
    ink_cols = (a < 128).any(axis=0)
    runs = np.flatnonzero(np.diff(ink_cols.astype(int)) == 1)
    assert len(runs) + int(ink_cols[0]) == 3  # three separate glyphs, gaps between
    with pytest.raises(imaging.EmptyImageError):
        imaging.compose_line([_blank(5, 5)], np.random.default_rng(0))


def test_normalize_char_speed_on_casia_sized_bitmaps():
    """A loose guard on the hot path (the benchmark measures it properly)."""
    import time
    rng = np.random.default_rng(0)
    bitmaps = []
    for _ in range(300):
        b = _blank(int(rng.integers(50, 110)), int(rng.integers(50, 110)))
        # Strokes of random gray on a 255 background, as CASIA's: the clean path.
        strokes = rng.random((b.shape[0] - 10, b.shape[1] - 10)) < 0.3
        b[5:-5, 5:-5][strokes] = rng.integers(0, 250, size=int(strokes.sum()))
        bitmaps.append(b)
    start = time.perf_counter()
    for b in bitmaps:
        imaging.normalize_char(b)
    per_sample = (time.perf_counter() - start) / len(bitmaps)
    assert per_sample < 1e-3  # typically ~60 µs; 1 ms leaves room for a busy shared machine
    # A photo (grey background): the full background rule, about 0.5-1 ms at this size.
    start = time.perf_counter()
    for b in bitmaps[:50]:
        imaging.normalize_char((b * 0.8).astype(np.uint8))
    assert (time.perf_counter() - start) / 50 < 20e-3


# === Background normalization ===


def _stroke_image(background=255.0, ink=40.0):
    image = np.full((40, 50), 255.0)
    image[10:30, 20:24] = ink
    image[18:21, 8:42] = ink
    return np.round(image * background / 255.0).astype(np.uint8)


def test_clean_bitmap_is_returned_unchanged():
    bitmap = _stroke_image()
    bitmap[9, 20:24] = 252  # an anti-aliased halo stays as it is
    assert imaging.normalize_background(bitmap) is bitmap
    # Bold: most pixels are ink, so the full rule runs, and it is the identity too.
    bold = _blank(40, 50)
    bold[3:37, 4:46] = np.arange(34 * 42).reshape(34, 42) % 200
    assert not imaging._is_clean(bold)
    assert np.array_equal(imaging.normalize_background(bold), bold)


def test_grey_background_becomes_white_and_ink_keeps_its_level():
    out = imaging.normalize_background(_stroke_image(background=210.0))
    assert np.abs(out.astype(int) - _stroke_image()).max() <= 2
    assert imaging.ink_bbox(out) == imaging.ink_bbox(_stroke_image())


def test_white_on_black_is_inverted():
    out = imaging.normalize_background(255 - _stroke_image())
    assert np.abs(out.astype(int) - _stroke_image()).max() <= 2


def test_otsu_threshold_splits_two_levels_at_the_first_maximum():
    hist = np.zeros(256, np.int64)
    hist[[30, 200]] = [10, 90]
    assert imaging._otsu_threshold(hist) == 30  # 30..199 all split the same way: the first
    hist[:] = 0
    hist[77] = 5
    assert imaging._otsu_threshold(hist) is None


def test_gradient_is_flattened_by_the_fitted_plane():
    ramp = np.linspace(190.0, 250.0, 50)[None, :]
    lit = np.round(_stroke_image().astype(np.float64) * ramp / 255.0).astype(np.uint8)
    out = imaging.normalize_background(lit)
    assert np.abs(out.astype(int) - _stroke_image()).max() <= 2
