"""Synthetic handwriting: the embedded default dataset, rendered from CJK fonts into real GNT/DGRL.

Each synthetic writer has a consistent style (a font, stroke width, slant, size, aspect and ink
tone), and each sample is distorted on its own (a random affine, an elastic deformation, ink
variation and noise) and then cropped to its ink, like CASIA-HWDB bitmaps, so sizes vary from
sample to sample. Output is deterministic for a seed: work is cut into (writer, chunk) tasks,
each seeded from `(seed, writer, chunk)`, and written in order whatever the worker count.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import multiprocessing
import os
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from beam_preprocess.contract import dgrl, gnt
from beam_preprocess.progress import progress_bar

FONT_PACKAGES = ("fonts-arphic-ukai", "fonts-arphic-uming", "fonts-arphic-gkai00mp",
                 "fonts-arphic-gbsn00lp", "fonts-wqy-microhei", "fonts-wqy-zenhei",
                 "fonts-lxgw-wenkai")
DEFAULT_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts",
                     os.path.expanduser("~/.local/share/fonts"), os.path.expanduser("~/.fonts"))
# Kai (brush-script) faces look most like handwriting: writers pick them more often.
HANDWRITING_LIKE = ("kai", "wenkai")
CHUNK = 200  # characters per task: small enough for a smooth progress bar and balanced workers
SENTENCE_PUNCT = "，。、；：？！"


class NoFontError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Font:
    path: str
    index: int  # face index inside a .ttc collection

    @property
    def name(self) -> str:
        return f"{os.path.basename(self.path)}#{self.index}"

    @property
    def handwriting_like(self) -> bool:
        return any(key in self.path.lower() for key in HANDWRITING_LIKE)


@functools.lru_cache(maxsize=64)
def _cmap(path: str, index: int) -> frozenset:
    from fontTools.ttLib import TTFont
    font = TTFont(path, fontNumber=index, lazy=True)
    try:
        return frozenset(font.getBestCmap() or {})
    finally:
        font.close()


def find_fonts(chars: Sequence[str], font_dirs: Sequence[str] = ()) -> list[Font]:
    """Fonts under `font_dirs` (or the system font directories) that cover every char in `chars`.

    Raises:
      NoFontError: no font covers the characters; the message names the Debian packages to install.
    """
    dirs = list(font_dirs) or list(DEFAULT_FONT_DIRS)
    files = sorted({f for d in dirs for pattern in ("**/*.ttf", "**/*.ttc", "**/*.otf")
                    for f in glob.glob(os.path.join(d, pattern), recursive=True)})
    needed = {ord(c) for c in chars}
    fonts = []
    for path in files:
        try:
            if needed <= _cmap(path, 0):
                fonts.append(Font(path, 0))
        except Exception:  # an unreadable font file is simply not a candidate
            continue
    if not fonts:
        raise NoFontError(
            f"no font under {', '.join(dirs)} covers the {len(needed)} requested characters. "
            f"Install Debian's CJK fonts: apt-get install {' '.join(FONT_PACKAGES)} "
            f"(scripts/setup_env.sh does this when run as root), or pass --font-dir DIR")
    return fonts


@dataclasses.dataclass(frozen=True)
class WriterStyle:
    """What stays the same across one synthetic writer's samples."""
    font: Font
    size: int          # render size in pixels (the em box)
    stroke: int        # extra stroke width in pixels
    slant: float       # horizontal shear
    aspect: float      # x scale relative to y
    ink: int           # darkest ink grey level (0 = black)
    wobble: float      # strength of the per-sample elastic deformation

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["font"] = self.font.name
        return d


def writer_style(fonts: Sequence[Font], seed: int, writer: int) -> WriterStyle:
    rng = np.random.default_rng([seed, writer, 0x57])
    weights = np.array([3.0 if f.handwriting_like else 1.0 for f in fonts])
    font = fonts[rng.choice(len(fonts), p=weights / weights.sum())]
    size = int(rng.integers(44, 80))
    # Extra stroke width only on the larger em sizes: at 44 px a 2 px stroke fills the counters.
    stroke = int(rng.integers(0, 2)) + int(size > 64 and rng.random() < 0.3)
    return WriterStyle(font=font, size=size, stroke=stroke,
                       slant=float(rng.uniform(-0.25, 0.25)),
                       aspect=float(rng.uniform(0.85, 1.15)), ink=int(rng.integers(0, 70)),
                       wobble=float(rng.uniform(0.6, 1.4)))


@functools.lru_cache(maxsize=32)
def _pil_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size=size, index=index)


def render_ink(char: str, style: WriterStyle, rng: np.random.Generator) -> np.ndarray:
    """Renders one distorted character as float32 ink coverage in [0, 1] on a 2x em canvas."""
    size = style.size
    canvas = 2 * size
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text((canvas / 2, canvas / 2), char, fill=255, anchor="mm",
                               font=_pil_font(style.font.path, style.font.index, size),
                               stroke_width=style.stroke, stroke_fill=255)
    # Affine: the writer's slant and aspect, plus per-sample rotation, shear and scale jitter.
    angle = np.deg2rad(rng.normal(0.0, 4.0))
    shear = style.slant + rng.normal(0.0, 0.05)
    sx = style.aspect * rng.uniform(0.9, 1.1)
    sy = rng.uniform(0.9, 1.1)
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[sx, shear], [0.0, sy]])
    inverse = np.linalg.inv(forward)  # PIL maps output pixels back to input pixels
    centre = np.array([canvas / 2, canvas / 2])
    offset = centre - inverse @ centre
    image = image.transform((canvas, canvas), Image.AFFINE,
                            (inverse[0, 0], inverse[0, 1], offset[0],
                             inverse[1, 0], inverse[1, 1], offset[1]), resample=Image.BILINEAR)
    ink = np.asarray(image, dtype=np.float32) / 255.0
    # Elastic: a smooth random displacement field, drawn coarse and upsampled (cheap and smooth).
    alpha = style.wobble * size * 0.035
    coarse = rng.normal(0.0, 1.0, size=(2, 5, 5)).astype(np.float32)
    zoom = canvas / 5
    field = np.stack([ndimage.zoom(c, zoom, order=3)[:canvas, :canvas] for c in coarse]) * alpha
    rows, cols = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    return ndimage.map_coordinates(ink, [rows + field[0], cols + field[1]], order=1,
                                   mode="constant", cval=0.0)


def ink_to_bitmap(ink: np.ndarray, style: WriterStyle, rng: np.random.Generator) -> np.ndarray:
    """Turns ink coverage into a CASIA-like grey bitmap (background exactly 255)."""
    level = np.clip(style.ink + rng.normal(0, 8) + rng.normal(0, 12, ink.shape), 0, 200)
    pixels = 255.0 - ink * (255.0 - level)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def crop_to_ink(bitmap: np.ndarray, threshold: int = 250) -> np.ndarray:
    rows = np.flatnonzero((bitmap < threshold).any(axis=1))
    cols = np.flatnonzero((bitmap < threshold).any(axis=0))
    if rows.size == 0:
        return bitmap[:1, :1]
    return bitmap[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def render_sample(char: str, style: WriterStyle, rng: np.random.Generator) -> np.ndarray:
    """One synthetic handwritten sample: uint8 (h, w), background 255, cropped to its ink."""
    ink = render_ink(char, style, rng)
    return crop_to_ink(ink_to_bitmap(ink, style, rng))


# --- text lines -----------------------------------------------------------------------------
def random_line_text(rng: np.random.Generator, chars: Sequence[str], length: int) -> str:
    """A line of mostly characters from `chars`, with numbers, Latin and punctuation mixed in."""
    out: list[str] = []
    since_punct = 0
    while len(out) < length:
        roll = rng.random()
        if roll < 0.06:
            out.extend(str(int(rng.integers(0, 10 ** int(rng.integers(1, 5))))))
        elif roll < 0.08:
            out.extend(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
                                  size=int(rng.integers(1, 4))))
        elif since_punct > 4 and roll < 0.2:
            out.append(SENTENCE_PUNCT[int(rng.integers(len(SENTENCE_PUNCT)))])
            since_punct = 0
            continue
        else:
            out.append(chars[int(rng.integers(len(chars)))])
        since_punct += 1
    return "".join(out[:length])


def render_line(text: str, style: WriterStyle, rng: np.random.Generator) -> np.ndarray:
    """Renders a text line: glyphs in their em boxes (so punctuation sits low), with spacing
    and baseline jitter; returns the line's bounding-box bitmap (background 255)."""
    size = style.size
    pieces = []
    for char in text:
        ink = render_ink(char, style, rng)
        band = ink[size // 2: size // 2 + size]  # the em box rows, keeping vertical placement
        cols = np.flatnonzero(band.max(axis=0) > 0.1)
        if cols.size == 0:
            continue
        glyph = band[:, cols[0]:cols[-1] + 1]
        shift = int(rng.normal(0, size * 0.03))
        glyph = np.roll(glyph, shift, axis=0)
        gap = np.zeros((size, max(1, int(size * rng.uniform(0.05, 0.25)))), np.float32)
        pieces.extend([glyph, gap])
    line = np.concatenate(pieces[:-1], axis=1) if pieces else np.zeros((size, 1), np.float32)
    return crop_to_ink(ink_to_bitmap(line, style, rng))


# --- orchestration ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SynthSpec:
    """What `synthesize` renders (the hccr-synth flags).

    Attributes:
      out_dir: output directory (created if missing).
      chars: the characters (classes) to render, in charset order.
      writers: number of synthetic writers.
      samples_per_class: samples of each class per writer (CASIA has one).
      pages: DGRL pages per writer.
      lines_per_page: text lines per page.
      line_length: characters per text line, drawn from MIN (included) to MAX (excluded).
      seed: random seed.
      first_writer: number of the first writer; files are named by writer number.
      font_dirs: directories to search for fonts (default: the system font directories).
    """
    out_dir: str
    chars: tuple[str, ...]
    writers: int = 10
    samples_per_class: int = 1
    pages: int = 0
    lines_per_page: int = 8
    line_length: tuple[int, int] = (8, 20)
    seed: int = 0
    first_writer: int = 1
    font_dirs: tuple[str, ...] = ()

    # Writer "S0001": the S keeps synthetic writers out of the CASIA writer-number ranges, so
    # `hccr-preprocess --split auto` never mistakes them for HWDB1.0 writers.
    def gnt_path(self, writer: int) -> str:
        return os.path.join(self.out_dir, f"S{writer:04d}-synth.gnt")

    def dgrl_path(self, writer: int, page: int) -> str:
        return os.path.join(self.out_dir, f"S{writer:04d}-P{page + 1:02d}.dgrl")


def _char_task(spec: SynthSpec, style: WriterStyle, writer: int, chunk: int) -> bytes:
    rng = np.random.default_rng([spec.seed, writer, chunk, 1])
    chars = spec.chars[chunk * CHUNK:(chunk + 1) * CHUNK]
    return gnt.gnt_bytes((c, render_sample(c, style, rng))
                         for _ in range(spec.samples_per_class) for c in chars)


def _page_task(spec: SynthSpec, style: WriterStyle, writer: int, page: int) -> None:
    rng = np.random.default_rng([spec.seed, writer, page, 2])
    lines, top = [], 20
    for _ in range(spec.lines_per_page):
        text = random_line_text(rng, spec.chars, int(rng.integers(*spec.line_length)))
        image = render_line(text, style, rng)
        left = int(rng.integers(10, 40))
        lines.append((text, top, left, image))
        top += image.shape[0] + int(rng.integers(5, 20))
    width = max(left + im.shape[1] for _, _, left, im in lines) + 20
    dgrl.write_dgrl(spec.dgrl_path(writer, page), page_height=top + 20, page_width=width,
                    lines=lines)


def _run_task(task):
    kind, spec, style, writer, index = task
    if kind == "chars":
        count = len(spec.chars[index * CHUNK:(index + 1) * CHUNK]) * spec.samples_per_class
        return kind, writer, count, _char_task(spec, style, writer, index)
    _page_task(spec, style, writer, index)
    return kind, writer, 1, b""


def synthesize(spec: SynthSpec, *, workers: int | None = None, progress: bool = True) -> dict:
    """Renders the GNT (and DGRL) files of `spec` and writes a `synth.json` manifest.

    Returns:
      The manifest: files, fonts and style per writer, sample/line counts.
    """
    text_chars = set(spec.chars)
    if spec.pages:
        text_chars |= set("0123456789") | set(SENTENCE_PUNCT)
    fonts = find_fonts(sorted(text_chars), spec.font_dirs)
    os.makedirs(spec.out_dir, exist_ok=True)
    writers = range(spec.first_writer, spec.first_writer + spec.writers)
    styles = {w: writer_style(fonts, spec.seed, w) for w in writers}
    chunks = -(-len(spec.chars) // CHUNK)
    tasks = [("chars", spec, styles[w], w, c) for w in writers for c in range(chunks)]
    tasks += [("pages", spec, styles[w], w, p) for w in writers for p in range(spec.pages)]
    total = (len(spec.chars) * spec.samples_per_class + spec.pages) * spec.writers
    bar = progress_bar(total, "hccr-synth", unit="samples+pages", enabled=progress)
    open_files: dict[int, object] = {}
    workers = workers or os.cpu_count() or 1
    try:
        with (multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else
              _InlinePool()) as pool:
            for kind, writer, count, payload in pool.imap(_run_task, tasks):
                if kind == "chars":
                    if writer not in open_files:
                        open_files[writer] = open(spec.gnt_path(writer), "wb")
                    open_files[writer].write(payload)
                bar.update(count)
    finally:
        for f in open_files.values():
            f.close()
        bar.close()
    manifest = {
        "seed": spec.seed, "classes": len(spec.chars),
        "samples_per_class": spec.samples_per_class,
        "samples": len(spec.chars) * spec.samples_per_class * spec.writers,
        "pages": spec.pages * spec.writers,
        "lines": spec.pages * spec.lines_per_page * spec.writers,
        "writers": {str(w): {"gnt": os.path.basename(spec.gnt_path(w)),
                             "dgrl": [os.path.basename(spec.dgrl_path(w, p))
                                      for p in range(spec.pages)],
                             "style": styles[w].as_dict()} for w in writers},
        "fonts_available": [f.name for f in fonts],
    }
    with open(os.path.join(spec.out_dir, "synth.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
    return manifest


class _InlinePool:
    """The Pool interface, in-process (workers=1: no start-up cost, easy to debug)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, items) -> Iterator:
        return map(fn, items)
