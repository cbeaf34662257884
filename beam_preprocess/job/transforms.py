"""The Beam transforms of `hccr-preprocess`, and the per-sample work they do.

The job is planned on the driver (`pipeline.py`) as a list of `ShardTask`s: each task is one
output shard and the whole input files (writers) that go into it, in sorted order. One
`WriteShardFn` call reads those files, turns every sample into a `tf.train.Example` or a reject,
and streams the examples into the shard: so shards are byte-identical whatever the number of
workers, and no image crosses a shuffle. Pipeline::

    Tasks -> Distribute (Reshuffle) -> WriteShard --> Summarize -> WriteMetadata
                                           ^                          ^
    Charset (named, or BuildCharset over the inputs) ---- side input -+

Every sample read has exactly one outcome, counted in a Beam counter (namespace "hccr") and in
the `ShardResult` elements that `Summarize` adds up:

=====================  ==========================================================================
outcome                meaning
=====================  ==========================================================================
written                an example in a shard
rejected.<reason>      a JSON line in `rejects/` with file, offset, reason and detail; reasons:
                       ``malformed_record`` (a damaged byte range the reader skipped, up to
                       the next well-formed record: see gnt.py; one reject whatever its
                       length, with `end` and `bytes_skipped`), ``malformed_tail`` (the same,
                       running to the end of the file), ``malformed_file`` (a DGRL page header
                       that cannot be read), ``undecodable_code``, ``out_of_charset``,
                       ``empty_bitmap`` (no ink), ``line_has_unknown_chars`` (the detail names
                       each character), ``empty_label`` (a line without characters),
                       ``line_too_wide`` (wider than `JobConfig.max_line_width` once scaled)
pooled                 (lines task, `--synth-lines`) a GNT sample kept as material for
                       synthetic lines of its writer
=====================  ==========================================================================

so that ``read == written + rejected + pooled``; `synthesized_lines` counts the synthetic lines.
A skipped byte range is read as one record and rejected as one record; the bytes it covers
are added up in metadata.json's ``bytes_skipped`` (and the counter of that name).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import posixpath
import uuid
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_preprocess.contract import dgrl, gnt, imaging, schema
from beam_preprocess.contract.charset import Charset
from beam_preprocess.contract.errors import CasiaFormatError
from beam_preprocess.contract.fileio import has_scheme, join
from beam_preprocess.contract.metadata import to_bytes as metadata_bytes
from beam_preprocess.contract.tfrecords import RecordWriter
from beam_preprocess.job import job_progress

NAMESPACE = "hccr"
REJECT_REASONS = ("malformed_record", "malformed_tail", "malformed_file", "undecodable_code",
                  "out_of_charset", "empty_bitmap", "line_has_unknown_chars", "empty_label",
                  "line_too_wide")
# Widest stored line image, margins included: 128 times the default height. Real HWDB2.x lines
# scale to about 1,000-2,500 pixels at height 64; a 1-pixel-tall line would otherwise scale to
# tens of megabytes.
MAX_LINE_WIDTH = 8192
TMP_PREFIX = ".tmp-"  # temporary files start with "." so shard globs never match them


# === Plan ===


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """What the workers need to know (everything else stays on the driver)."""
    task: str                       # "chars" or "lines"
    output: str                     # output directory (any Beam filesystem)
    image_size: int = imaging.DEFAULT_SIZE  # chars: square side; lines: height
    margin: int = imaging.DEFAULT_MARGIN
    ink_threshold: int = imaging.INK_THRESHOLD
    compression: str = ""           # "" or "GZIP"
    seed: int = 0                   # synthetic lines
    synth_line_chars: tuple = (8, 24)  # characters per synthetic line, inclusive range
    synth_char_height: int = 64     # nominal glyph size when composing synthetic lines
    max_line_width: int = MAX_LINE_WIDTH  # lines: wider once scaled -> reject line_too_wide


@dataclasses.dataclass(frozen=True)
class InputFile:
    path: str     # as given to Beam's FileSystems (local path or URL)
    name: str     # path relative to the inputs' common directory: `source` and sort key
    kind: str     # "gnt" or "dgrl"
    size: int
    writer: str
    split: str


@dataclasses.dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    count: int
    files: tuple = ()               # InputFile, sorted by name
    synth_lines: tuple = ()         # lines task: synthetic lines to compose per file


def rejects_name(split: str, index: int, count: int) -> str:
    return f"{schema.REJECTS_DIR}/rejects-{split}-{index:05d}-of-{count:05d}.jsonl"


# === Per-sample work (pure: no Beam) ===


@dataclasses.dataclass(frozen=True)
class Reject:
    reason: str
    detail: str
    offset: int
    extra: dict = dataclasses.field(default_factory=dict)

    def record(self, f: InputFile) -> dict:
        return {"file": f.path, "offset": self.offset, "reason": self.reason,
                "detail": self.detail, "split": f.split, "writer": f.writer, **self.extra}


@dataclasses.dataclass(frozen=True)
class Example:
    data: bytes       # serialized tf.train.Example
    chars: str        # the label character(s), for class counts


def _char_note(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X})"


def check_char_sample(sample: gnt.GntSample, index: dict) -> Reject | None:
    """Why a GNT sample cannot become an example (None when it can, ink aside)."""
    extra = {"index": sample.index, "code": sample.code.hex().upper(), "char": sample.char}
    if sample.char is None:
        return Reject("undecodable_code", sample.problem or "undecodable code", sample.offset,
                      extra)
    if sample.char not in index:
        return Reject("out_of_charset", f"{_char_note(sample.char)} is not in the charset",
                      sample.offset, extra)
    return None


def char_outcome(sample: gnt.GntSample, f: InputFile, index: dict, cfg: JobConfig
                 ) -> Example | Reject:
    """One GNT sample -> an `Example` (schema "chars") or a `Reject`."""
    reject = check_char_sample(sample, index)
    if reject is not None:
        return reject
    try:
        image = imaging.normalize_char(sample.image, cfg.image_size, cfg.margin,
                                       cfg.ink_threshold)
    except imaging.EmptyImageError as err:
        return Reject("empty_bitmap", str(err), sample.offset,
                      {"index": sample.index, "code": sample.code.hex().upper(),
                       "char": sample.char})
    height, width = sample.image.shape
    data = schema.char_example(image=image.tobytes(), height=cfg.image_size,
                               width=cfg.image_size, label=index[sample.char],
                               char=sample.char, writer=f.writer, orig_height=height,
                               orig_width=width, source=f"{f.name}:{sample.offset}")
    return Example(data, sample.char)


def line_example(image: np.ndarray, text: str, orig: np.ndarray, index: dict, f: InputFile,
                 source: str) -> Example:
    data = schema.line_example(image=image.tobytes(), height=image.shape[0],
                               width=image.shape[1], labels=[index[c] for c in text], text=text,
                               writer=f.writer, orig_height=orig.shape[0],
                               orig_width=orig.shape[1], source=source)
    return Example(data, text)


def dgrl_line_outcome(line: dgrl.DgrlLine, f: InputFile, index: dict, cfg: JobConfig
                      ) -> Example | Reject:
    """One DGRL text line -> an `Example` (schema "lines") or a `Reject`."""
    extra = {"line": line.index, "text": line.text}
    if line.problems:
        return Reject("undecodable_code", "; ".join(line.problems), line.offset, extra)
    if not line.text:
        return Reject("empty_label", "the line has no characters", line.offset, extra)
    unknown = sorted({c for c in line.text if c not in index})
    if unknown:
        return Reject("line_has_unknown_chars",
                      "not in the charset: " + ", ".join(_char_note(c) for c in unknown),
                      line.offset, extra)
    try:
        image = imaging.normalize_line(line.image, cfg.image_size, cfg.margin, cfg.ink_threshold,
                                       max_width=cfg.max_line_width)
    except imaging.EmptyImageError as err:
        return Reject("empty_bitmap", str(err), line.offset, extra)
    except imaging.LineTooWideError as err:
        return _too_wide(line, err.width, cfg, extra)
    return line_example(image, line.text, line.image, index, f, f"{f.name}:{line.offset}")


def _too_wide(line: dgrl.DgrlLine, width: int, cfg: JobConfig, extra: dict) -> Reject:
    height, orig_width = line.image.shape
    return Reject("line_too_wide", f"a {orig_width}x{height} line scales to {width} pixels "
                  f"wide at height {cfg.image_size}, over the maximum {cfg.max_line_width}",
                  line.offset, extra)


def file_seed(seed: int, name: str) -> list[int]:
    """Seed for a file's synthetic lines: the job seed and a hash of the file's name."""
    return [seed, int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")]


def synth_lines(pool: Sequence[gnt.GntSample], count: int, f: InputFile, index: dict,
                cfg: JobConfig) -> Iterator[Example]:
    """`count` synthetic text lines written by one writer: random samples of its own pool.

    Deterministic for (cfg.seed, f.name, the pool). A line draws its length uniformly from
    `cfg.synth_line_chars` and its characters from the pool without replacement (with
    replacement when the pool is smaller); `source` is "<file>:synth-<k>".
    """
    if not pool:
        return
    rng = np.random.default_rng(file_seed(cfg.seed, f.name))
    low, high = cfg.synth_line_chars
    for k in range(count):
        length = int(rng.integers(low, high + 1))
        picks = rng.choice(len(pool), size=length, replace=length > len(pool))
        samples = [pool[int(i)] for i in picks]
        bitmap = imaging.compose_line([s.image for s in samples], rng,
                                      char_height=cfg.synth_char_height,
                                      ink_threshold=cfg.ink_threshold)
        image = imaging.normalize_line(bitmap, cfg.image_size, cfg.margin, cfg.ink_threshold)
        yield line_example(image, "".join(s.char for s in samples), bitmap, index, f,
                           f"{f.name}:synth-{k}")


# === Beam: one shard per task ===


@dataclasses.dataclass
class ShardResult:
    """What one shard task did (summed by `Summarize` into metadata.json)."""
    split: str
    index: int
    path: str = ""
    files: int = 0
    read: int = 0
    written: int = 0
    rejected: int = 0
    pooled: int = 0
    synthesized: int = 0
    synth_missing: int = 0      # synthetic lines asked for files with an empty pool
    bytes: int = 0
    bytes_skipped: int = 0      # bytes of the damaged ranges the readers skipped
    rejects: dict = dataclasses.field(default_factory=dict)       # reason -> count
    class_counts: dict = dataclasses.field(default_factory=dict)  # char -> count

    @property
    def examples(self) -> int:
        return self.written + self.synthesized


class _Counters:
    def __init__(self):
        self._counters = {}

    def inc(self, name: str, n: int = 1) -> None:
        if n:
            if name not in self._counters:
                self._counters[name] = Metrics.counter(NAMESPACE, name)
            self._counters[name].inc(n)


class WriteShardFn(beam.DoFn):
    """Reads a task's files and writes its shard (and its rejects), atomically.

    Files are written under a temporary name starting with "." and renamed when complete, so
    a retried or failed attempt never leaves a half-written shard under a shard name.
    """

    def __init__(self, config: JobConfig, progress_dir: str | None = None):
        self.config = config
        self.progress_dir = progress_dir  # local runner only: see job_progress.py

    def setup(self):
        self.counters = _Counters()

    def process(self, task: ShardTask, charset: Sequence[str]) -> Iterator[ShardResult]:
        cfg = self.config
        index = {c: i for i, c in enumerate(charset)}
        name = schema.shard_name(task.split, task.index, task.count, cfg.compression)
        result = ShardResult(task.split, task.index, path=join(cfg.output, name))
        reasons, classes = collections.Counter(), collections.Counter()
        rejects: list[dict] = []
        synth = task.synth_lines or (0,) * len(task.files)

        def on_outcome(outcome, f: InputFile, writer: RecordWriter) -> None:
            if isinstance(outcome, Example):
                writer.write(outcome.data)
                classes.update(outcome.chars)
            else:
                rejects.append(outcome.record(f))
                reasons[outcome.reason] += 1

        def write_records(fileobj):
            writer = RecordWriter(fileobj, cfg.compression)
            for f, n_synth in zip(task.files, synth, strict=True):
                before = (writer.records, len(rejects))
                read, pooled, made, missing, skipped = self._process_file(
                    f, n_synth, index, on_outcome, writer)
                written = writer.records - before[0] - made
                rejected = len(rejects) - before[1]
                result.files += 1
                result.read += read
                result.written += written
                result.rejected += rejected
                result.pooled += pooled
                result.synthesized += made
                result.synth_missing += missing
                result.bytes_skipped += skipped
                for counter, n in (("files", 1), ("read", read), ("written", written),
                                   ("rejected", rejected), ("pooled", pooled),
                                   ("synthesized_lines", made), ("bytes_skipped", skipped)):
                    self.counters.inc(counter, n)
                if self.progress_dir:
                    job_progress.write_task_progress(
                        self.progress_dir, f"{task.split}-{task.index:05d}",
                        dataclasses.asdict(result))
            writer.close()
            result.bytes = writer.bytes_in

        _write_atomically(result.path, write_records)
        if rejects:
            lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                            for r in rejects).encode("utf-8")
            _write_atomically(join(cfg.output, rejects_name(task.split, task.index, task.count)),
                              lambda fileobj: fileobj.write(lines))
        for reason, n in reasons.items():
            self.counters.inc(f"rejected.{reason}", n)
        self.counters.inc("shards")
        result.rejects = dict(sorted(reasons.items()))
        result.class_counts = dict(sorted(classes.items()))
        yield result

    def _process_file(self, f: InputFile, n_synth: int, index: dict, on_outcome, writer):
        """Returns (records read, samples pooled, synthetic lines made, synthetic lines missing,
        bytes skipped)."""
        cfg = self.config
        read = pooled = skipped = 0
        with FileSystems.open(f.path, compression_type=CompressionTypes.UNCOMPRESSED) as fileobj:
            if f.kind == "dgrl":
                try:
                    page = dgrl.read_dgrl(fileobj, path=f.path, resync=True)
                except CasiaFormatError as err:
                    on_outcome(Reject("malformed_file", err.reason, err.offset), f, writer)
                    return 1, 0, 0, 0, 0
                items = sorted([*page.lines, *page.skipped], key=lambda item: item.offset)
                for item in items:
                    read += 1
                    if isinstance(item, gnt.SkippedBytes):
                        skipped += item.bytes_skipped
                        on_outcome(skipped_reject(item), f, writer)
                    else:
                        on_outcome(dgrl_line_outcome(item, f, index, cfg), f, writer)
                return read, 0, 0, 0, skipped
            pool = []
            for sample in gnt.read_gnt(fileobj, path=f.path, resync=True):
                read += 1
                if isinstance(sample, gnt.SkippedBytes):
                    skipped += sample.bytes_skipped
                    on_outcome(skipped_reject(sample), f, writer)
                elif cfg.task == "chars":
                    on_outcome(char_outcome(sample, f, index, cfg), f, writer)
                else:  # lines task: GNT samples are material for synthetic lines
                    reject = check_char_sample(sample, index)
                    if reject is None and imaging.ink_bbox(sample.image,
                                                           cfg.ink_threshold) is None:
                        reject = Reject("empty_bitmap", "no ink", sample.offset,
                                        {"index": sample.index, "char": sample.char,
                                         "code": sample.code.hex().upper()})
                    if reject is None:
                        pool.append(sample)
                        pooled += 1
                    else:
                        on_outcome(reject, f, writer)
        made = 0
        for example in synth_lines(pool, n_synth, f, index, cfg):
            on_outcome(example, f, writer)
            made += 1
        return read, pooled, made, n_synth - made, skipped


def skipped_reject(skipped: gnt.SkippedBytes) -> Reject:
    """The one reject of a byte range a reader skipped."""
    reason = "malformed_tail" if skipped.at_end else "malformed_record"
    resumed = ("to the end of the file" if skipped.at_end else
               f"resumed at the next well-formed record, byte {skipped.end}")
    return Reject(reason, f"{skipped.reason}; bytes {skipped.offset}-{skipped.end} skipped "
                          f"({skipped.bytes_skipped} bytes), {resumed}", skipped.offset,
                  {"end": skipped.end, "bytes_skipped": skipped.bytes_skipped})


def _write_atomically(path: str, write_fn) -> None:
    """Calls `write_fn(fileobj)` on a temporary file beside `path`, then renames it to `path`."""
    directory, name = posixpath.split(path) if has_scheme(path) else os.path.split(path)
    tmp = join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}-{name.replace('/', '_')}")
    fileobj = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        write_fn(fileobj)
    finally:
        fileobj.close()
    if FileSystems.exists(path):  # a retried attempt: replace what the earlier one wrote
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


class WriteShards(beam.PTransform):
    """`ShardTask`s -> one shard file (and rejects file) each -> `ShardResult`s.

    Args:
      tasks: the shard plan.
      config: the job's `JobConfig`.
      charset: a singleton PCollection holding the list of characters (class order).
      progress_dir: a local directory for the running totals the driver reports while the
        job runs (`job_progress.py`), or None.
    """

    def __init__(self, tasks: Sequence[ShardTask], config: JobConfig, charset,
                 progress_dir: str | None = None):
        super().__init__()
        self.tasks, self.config, self.charset = list(tasks), config, charset
        self.progress_dir = progress_dir

    def expand(self, pbegin):
        return (pbegin
                | "Tasks" >> beam.Create(self.tasks)
                | "Distribute" >> beam.Reshuffle()
                | "WriteShard" >> beam.ParDo(WriteShardFn(self.config, self.progress_dir),
                                             beam.pvalue.AsSingleton(self.charset)))


# === Charset from the data ===


def scan_characters(f: InputFile) -> Iterator[str]:
    """The distinct decodable characters of a file, read by the same readers (and resync) as
    `WriteShardFn`, so the charset holds exactly the characters the shards can hold."""
    seen = set()
    with FileSystems.open(f.path, compression_type=CompressionTypes.UNCOMPRESSED) as fileobj:
        if f.kind == "dgrl":
            try:
                page = dgrl.read_dgrl(fileobj, path=f.path, resync=True)
            except CasiaFormatError:
                # WriteShard rejects the file as malformed_file. (A bare `return` line: Beam
                # warns about "yield and return" when a comment follows it on the same line.)
                return
            for line in page.lines:
                seen.update(c for c in line.text if c != dgrl.UNKNOWN_CHAR)
        else:
            seen.update(gnt.read_codes(fileobj, path=f.path))
    yield from sorted(seen)


class BuildCharset(beam.PTransform):
    """`InputFile`s -> a singleton list: every character in them, in GB18030 code order
    (`Charset.from_data`)."""

    def expand(self, files):
        return (files
                | "ScanCharacters" >> beam.FlatMap(scan_characters)
                | "Distinct" >> beam.Distinct()
                | "Collect" >> beam.combiners.ToList()
                | "Order" >> beam.Map(lambda chars: Charset.from_data(chars).chars))


# === Summary and metadata ===


class Summarize(beam.CombineFn):
    """Adds up `ShardResult`s into the counts of metadata.json."""

    def create_accumulator(self):
        return {"counts": collections.Counter(), "rejects": collections.Counter(),
                "splits": {}, "class_counts": {}, "shards": {}}

    def add_input(self, acc, result: ShardResult):
        acc["counts"].update(read=result.read, written=result.written,
                             rejected=result.rejected, pooled=result.pooled,
                             synthesized=result.synthesized, synth_missing=result.synth_missing,
                             bytes=result.bytes, bytes_skipped=result.bytes_skipped)
        acc["rejects"].update(result.rejects)
        acc["splits"].setdefault(result.split, collections.Counter())[
            "num_examples"] += result.examples
        acc["class_counts"].setdefault(result.split, collections.Counter()).update(
            result.class_counts)
        acc["shards"].setdefault(result.split, set()).add(result.index)
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out["counts"].update(acc["counts"])
            out["rejects"].update(acc["rejects"])
            for split, c in acc["splits"].items():
                out["splits"].setdefault(split, collections.Counter()).update(c)
            for split, c in acc["class_counts"].items():
                out["class_counts"].setdefault(split, collections.Counter()).update(c)
            for split, s in acc["shards"].items():
                out["shards"].setdefault(split, set()).update(s)
        return out

    def extract_output(self, acc):
        return {
            "counts": {k: int(acc["counts"][k]) for k in
                       ("read", "written", "rejected", "pooled", "synthesized",
                        "synth_missing", "bytes", "bytes_skipped")},
            "rejects": {r: int(n) for r, n in sorted(acc["rejects"].items())},
            "num_examples": {s: int(c["num_examples"]) for s, c in sorted(acc["splits"].items())},
            "class_counts": {s: {ch: int(n) for ch, n in sorted(c.items())}
                             for s, c in sorted(acc["class_counts"].items())},
            "shards_done": {s: len(v) for s, v in sorted(acc["shards"].items())},
        }


class WriteMetadataFn(beam.DoFn):
    """Writes charset.txt and metadata.json after every shard is written; yields the metadata.

    Args:
      config: the job's `JobConfig`.
      static: the fields known on the driver (split plan, command, creation time, ...); the
        counts come from the `Summarize` output.
    """

    def __init__(self, config: JobConfig, static: dict):
        self.config, self.static = config, static

    def process(self, summary: dict, charset: Sequence[str]) -> Iterator[dict]:
        cfg = self.config
        chars = Charset(charset)
        plan = self.static["splits"]
        counts = summary["counts"]
        meta_counts = {"read": counts["read"], "written": counts["written"],
                       "rejected": counts["rejected"]}
        if cfg.task == "lines":
            meta_counts.update(pooled=counts["pooled"], synthesized=counts["synthesized"],
                               synth_missing=counts["synth_missing"])
        metadata = {
            **{k: v for k, v in self.static.items() if k != "splits"},
            "task": cfg.task,
            "image_height": cfg.image_size,
            "image_width": cfg.image_size if cfg.task == "chars" else None,
            "image_margin": cfg.margin,
            "ink_threshold": cfg.ink_threshold,
            "num_classes": len(chars),
            "charset_sha256": chars.sha256(),
            "compression": cfg.compression,
            "splits": {split: {**info,
                               "num_examples": summary["num_examples"].get(split, 0),
                               "shards_written": summary["shards_done"].get(split, 0)}
                       for split, info in sorted(plan.items())},
            "class_counts": {split: summary["class_counts"].get(split, {})
                             for split in sorted(plan)},
            "counts": meta_counts,
            "rejects": summary["rejects"],
            "bytes_written": counts["bytes"],
            "bytes_skipped": counts["bytes_skipped"],
        }
        charset_text = chars.to_text().encode("utf-8")
        _write_atomically(join(cfg.output, schema.CHARSET_FILE),
                          lambda fileobj: fileobj.write(charset_text))
        data = metadata_bytes(metadata)
        _write_atomically(join(cfg.output, schema.METADATA_FILE),
                          lambda fileobj: fileobj.write(data))
        yield metadata


def named_charset(pbegin, chars: Iterable[str]):
    """A singleton PCollection holding a fixed charset."""
    return pbegin | "Charset" >> beam.Create([list(chars)])
