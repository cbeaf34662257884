"""Synthetic writers as a training ingredient: `hccr-preprocess --synth-writers N`.

A small real dataset can mix in font-rendered writers of its own charset. `hccr-preprocess`
renders them with `synth.synthesize` (the rendering of `hccr-synth`, deterministic for a seed)
once it knows the charset it writes, and adds them to split "train" as input files:

* Charset: all of it, whatever `--charset` names. For `--charset data` the driver first reads
  the characters of the inputs (the scan `transforms.BuildCharset` does, so a large input set
  costs one extra read); the synthetic writers add no character, so the charset is the same as
  without the flag. Every writer writes every class once (`S0001-synth.gnt`, like a CASIA file).
* Fonts: as in `hccr-synth`, only the installed fonts with a glyph for every character of the
  charset are candidates, and each writer draws one (Kai faces more often). When no font covers
  the whole charset the job refuses before writing anything and names the characters no
  installed font has, so a glyph is never silently missing or drawn as a box.
* Files: `OUTPUT/synthetic-writers/S<writer:04d>-synth.gnt` and `synth.json` (each writer's
  style): under OUTPUT so that the workers of a distributed runner read them like any input
  (an object-store OUTPUT gets them rendered locally and copied). They stay after the job;
  metadata.json's `synthetic_writers` entry describes them, `--overwrite` deletes them with the
  rest of the dataset (`pipeline.prepare_output`), and the same flags, seed and fonts render the
  same bytes again.
* Splits: the writer ids are `S0001`, `S0002`, ... (`splits.writer_id` of the file names). The
  files get split "train" after the real files' splits are decided, so neither `--split auto`
  (which would fall back to "none" for non-CASIA writer ids) nor `--validation-fraction` ever
  sees them: the real files' splits are those of the same command without the flag.
* Refused, in one line each: N < 0, `--task lines`, no real input in split "train", a real
  writer id equal to a synthetic one, a real input inside OUTPUT/synthetic-writers.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import posixpath
import tempfile
from typing import Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_preprocess.contract.charset import Charset
from beam_preprocess.contract.fileio import has_scheme, join
from beam_preprocess.job import splits, transforms
from beam_preprocess.job.transforms import InputFile
from beam_preprocess.synthetic import synth

SYNTH_DIR = "synthetic-writers"   # under --output
FIRST_WRITER = 1
EXAMPLE = ("hccr-preprocess --split-glob 'train=sample/train-000[0-2].gnt' \\\n"
           "      --split-glob 'validation=sample/train-0003.gnt' --charset data \\\n"
           "      --synth-writers 200 --output out/sample-synth")


class SynthWritersError(ValueError):
    """Why `--synth-writers` cannot be used with these inputs and flags, in one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--synth-writers` and `--synth-seed` flags of hccr-preprocess."""
    group = parser.add_argument_group(
        "synthetic writers",
        "Mix font-rendered writers of the job's own charset into split 'train' (never\n"
        "validation or test), e.g.\n"
        f"  {EXAMPLE}\n"
        f"They are rendered into OUTPUT/{SYNTH_DIR}/ (S0001-synth.gnt, ...; every class once\n"
        "per writer, only fonts with a glyph for every class) and recorded in metadata.json's\n"
        "'synthetic_writers' entry.")
    group.add_argument("--synth-writers", type=int, default=0, metavar="N",
                       help="chars task: add N synthetic writers to split 'train' (0)")
    group.add_argument("--synth-seed", type=int, default=0, metavar="S",
                       help="seed of the synthetic writers; the same seed and fonts give the "
                            "same bytes (0)")


@dataclasses.dataclass(frozen=True)
class SyntheticWriters:
    """What the driver renders: checked against the inputs, not yet written."""
    count: int
    seed: int
    chars: tuple            # the whole charset of the job, class order

    @property
    def spec(self) -> synth.SynthSpec:
        return synth.SynthSpec(out_dir="", chars=self.chars, writers=self.count, seed=self.seed,
                               first_writer=FIRST_WRITER)

    def file_names(self) -> list[str]:
        return [os.path.basename(self.spec.gnt_path(w))
                for w in range(FIRST_WRITER, FIRST_WRITER + self.count)]


def data_charset(files: Sequence[InputFile]) -> list[str]:
    """The charset `--charset data` builds from `files`, read on the driver."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        found = pool.map(lambda f: set(transforms.scan_characters(f)), files)
        chars = set().union(*found)
    return Charset.from_data(chars).chars


def _chars_without_font(chars: Sequence[str]) -> list[str]:
    """The characters no installed font has a glyph for (the error path only: one font search
    per character)."""
    missing = []
    for char in chars:
        try:
            synth.find_fonts([char])
        except synth.NoFontError:
            missing.append(char)
    return missing


def plan(files: Sequence[InputFile], charset: Sequence[str] | None, count: int, seed: int,
         task: str, output: str) -> SyntheticWriters:
    """Checks that `count` synthetic writers can join these inputs.

    Args:
      files: the real inputs, their splits decided.
      charset: the job's classes in order, or None for `--charset data` (read from `files`).
      output: the job's --output.

    Raises:
      SynthWritersError: naming the flag, file or characters at fault.
    """
    if count < 0:
        raise SynthWritersError(f"--synth-writers cannot be negative. Received: {count}")
    if task != "chars":
        raise SynthWritersError(
            f"--synth-writers renders isolated characters, for --task chars (received --task "
            f"{task}); for text lines render DGRL pages with hccr-synth --pages N and pass them "
            f"as inputs")
    if not any(f.split == splits.TRAIN for f in files):
        present = sorted({f.split for f in files})
        raise SynthWritersError(
            f"--synth-writers adds writers to split 'train', and no input is in it (splits: "
            f"{', '.join(present)}); name it with --split-glob 'train=GLOB'")
    directory = join(output, SYNTH_DIR)
    inside = [f.path for f in files if _under(f.path, directory)]
    if inside:
        raise SynthWritersError(f"input {inside[0]} lies in {directory}, which --synth-writers "
                                f"rewrites: move it or choose another --output")
    synthetic = SyntheticWriters(count, seed, ())
    ids = {splits.writer_id(name) for name in synthetic.file_names()}
    clash = sorted((f.writer, f.path) for f in files if f.writer in ids)
    if clash:
        raise SynthWritersError(
            f"input {clash[0][1]} has writer id {clash[0][0]!r}, the id of a synthetic writer "
            f"(S0001-S{FIRST_WRITER + count - 1:04d}): rename it, or leave out --synth-writers "
            f"if it is one")
    chars = tuple(data_charset(files) if charset is None else charset)
    if not chars:
        raise SynthWritersError("--synth-writers: the charset is empty, nothing to render")
    try:
        synth.find_fonts(chars)
    except synth.NoFontError as err:
        missing = _chars_without_font(chars)
        if not missing:
            raise SynthWritersError(
                f"--synth-writers: no single installed font has a glyph for all {len(chars)} "
                f"characters of the charset (each has one in some font; a writer uses one "
                f"font): {err}") from None
        named = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in missing[:5])
        raise SynthWritersError(
            f"--synth-writers: {len(missing)} of the {len(chars)} characters of the charset "
            f"have no glyph in any installed font, e.g. {named}; install more CJK fonts "
            f"({' '.join(synth.FONT_PACKAGES)}) or use a --charset without them") from None
    return dataclasses.replace(synthetic, chars=chars)


def _under(path: str, directory: str) -> bool:
    if has_scheme(directory):
        return path.startswith(directory.rstrip("/") + "/")
    return not has_scheme(path) and os.path.abspath(path).startswith(
        os.path.abspath(directory) + os.sep)


def _render_workers(tasks: int) -> int:
    """Processes for `synth.synthesize`: the cores this process may run on (not every core of
    the machine, which `os.cpu_count` counts), and no more than there are tasks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, tasks))


def render(synthetic: SyntheticWriters, output: str, files: Sequence[InputFile], *,
           progress: bool = True) -> tuple[list[InputFile], dict]:
    """Renders the writers into OUTPUT/synthetic-writers/ and adds them to `files`.

    Returns:
      (the input files with the synthetic ones, split "train", sorted by name; metadata.json's
      `synthetic_writers` entry).
    """
    directory = join(output, SYNTH_DIR)
    names = synthetic.file_names()
    with tempfile.TemporaryDirectory(prefix="hccr-synth-writers-") as tmp:
        local_dir = tmp if has_scheme(directory) else directory
        spec = dataclasses.replace(synthetic.spec, out_dir=local_dir)
        chunks = -(-len(synthetic.chars) // synth.CHUNK)
        manifest = synth.synthesize(spec, workers=_render_workers(synthetic.count * chunks),
                                    progress=progress)
        sizes = {}
        for name in [*names, "synth.json"]:
            local_path = os.path.join(local_dir, name)
            sizes[name] = os.path.getsize(local_path)
            if has_scheme(directory):  # an object store: the workers read the copies there
                with open(local_path, "rb") as f, FileSystems.create(
                        join(directory, name),
                        compression_type=CompressionTypes.UNCOMPRESSED) as out:
                    out.write(f.read())
    taken = {f.name for f in files}
    added = []
    for name in names:
        relative = posixpath.join(SYNTH_DIR, name)
        if relative in taken:
            raise SynthWritersError(f"an input is named {relative!r} relative to the inputs' "
                                    f"common directory, like a synthetic writer file")
        path = join(directory, name) if has_scheme(directory) else os.path.abspath(
            join(directory, name))
        added.append(InputFile(path=path, name=relative, kind="gnt", size=sizes[name],
                               writer=splits.writer_id(name), split=splits.TRAIN))
    fonts = sorted({w["style"]["font"] for w in manifest["writers"].values()})
    entry = {
        "count": synthetic.count,
        "seed": synthetic.seed,
        "split": splits.TRAIN,
        "writers": f"{splits.writer_id(names[0])}-{splits.writer_id(names[-1])}",
        "directory": SYNTH_DIR,
        "classes": manifest["classes"],
        "samples": manifest["samples"],
        "fonts": fonts,
    }
    return sorted([*files, *added], key=lambda f: f.name), entry


def describe(entry: dict, output: str) -> str:
    """The job summary's line about the synthetic writers."""
    return (f"{entry['count']} synthetic writers ({entry['writers']}, {entry['samples']:,} "
            f"samples of {entry['classes']:,} classes, seed {entry['seed']}, fonts "
            f"{', '.join(entry['fonts'])}) rendered into {join(output, entry['directory'])} "
            f"and added to split {entry['split']!r}")
