"""`hccr-preprocess`: CASIA-HWDB `.gnt` / `.dgrl` files -> sharded TFRecords, nothing lost.

    hccr-preprocess --input 'data/HWDB1.1trn_gnt/*.gnt' --output data/hwdb11 \\
        --direct_num_workers 2 --direct_running_mode multi_processing

Own flags are parsed here; every other flag is a Beam pipeline option and passes through
unchanged (`--runner DataflowRunner --project ... --region ... --temp_location gs://...`,
`--runner FlinkRunner --flink_master ...`, `--runner SparkRunner ...`, `--s3_endpoint_url ...`,
`--runner DaskRunner --dask_client_address tcp://HOST:8786`: see runners.py for the short names).
Inputs are globs on any Beam filesystem (local, gs://, s3://, hdfs:// with Beam's extras). The
DirectRunner (the default) always runs Beam's FnApiRunner, honouring `--direct_num_workers`
and `--direct_running_mode` (Beam's DirectRunner would otherwise try to download Prism).

Output directory::

    <split>-<shard:05d>-of-<n:05d>.tfrecord[.gz]   tf.train.Examples, schema in schema.py
    charset.txt                                    one character per line, line i = class i
    metadata.json                                  see metadata.py (plus the job's settings)
    rejects/rejects-<split>-<shard>-of-<n>.jsonl   one JSON object per rejected record
    synthetic-writers/S<writer:04d>-synth.gnt      --synth-writers N: inputs added to train

Determinism: the driver plans the shards (whole files, balanced by size, see splits.py); one
task writes one shard from its files in name order, so the same inputs and flags give
byte-identical shards whatever the runner's worker count.

Progress: on the local runner a line on stderr every `--progress-seconds` (files done, samples,
rate, rejects so far; rewritten in place on a terminal), see job_progress.py; other runners get
one line pointing at their own UI.

Accounting: at the end the job checks that every planned shard is there, reads metadata.json
back, compares it with the Beam counters (and, with `--verify` or on a runner without counters
such as Dask, with the records actually in the shards and rejects files), prints a summary, and
exits 1 unless read == written + rejected (+ pooled for synthetic lines).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_preprocess import cli_errors
from beam_preprocess.contract import dgrl, gnt, schema
from beam_preprocess.contract.charset import Charset
from beam_preprocess.contract.errors import CasiaFormatError
from beam_preprocess.contract.fileio import has_scheme, join
from beam_preprocess.contract.tfrecords import COMPRESSIONS, iter_records
from beam_preprocess.job import beam_private, job_progress, runners, splits, transforms
from beam_preprocess.job.transforms import InputFile, JobConfig, ShardTask
from beam_preprocess.synthetic import writers as synthetic_writers

PROG = "hccr-preprocess"
DEFAULT_CHARSETS = {"chars": "gb2312-1", "lines": "gb2312+lines"}
KINDS = {".gnt": "gnt", ".dgrl": "dgrl"}
_SECRET_WORDS = ("secret", "token", "password", "credential")
_BEAM_HYPHENATED = ("--job-server-timeout",)


class InputError(ValueError):
    """A problem with the job's inputs or flags: reported in one line, exit status 2."""


# === Flags ===


def build_parser() -> argparse.ArgumentParser:
    d = JobConfig  # defaults live in the config dataclass, not twice
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Turn CASIA-HWDB .gnt (isolated characters) and .dgrl (text lines) files\n"
                    "into sharded TFRecords of tf.train.Examples, with charset.txt,\n"
                    "metadata.json and rejects/. Flags not listed here are Apache Beam pipeline\n"
                    "options and pass through unchanged (--runner, --direct_num_workers,\n"
                    "--direct_running_mode, --s3_endpoint_url, Dataflow/Flink/Spark options;\n"
                    "--runner DaskRunner --dask_client_address tcp://HOST:PORT for Dask).",
        epilog="Examples:\n"
               "  hccr-preprocess --input 'HWDB1.1trn_gnt/*.gnt' --input 'HWDB1.1tst_gnt/*.gnt'"
               " --output out/hwdb11\n"
               "  hccr-preprocess --split-glob 'train=data/train-000[0-2].gnt' "
               "--split-glob validation=data/train-0003.gnt --output out/sample --charset data\n"
               "  hccr-preprocess --task lines --input 'HWDB2.1/*.dgrl' --output out/lines "
               "--direct_num_workers 2 --direct_running_mode multi_processing",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--input", action="extend", nargs="+", default=[], metavar="GLOB",
                   help="input files: globs, files or directories, on any Beam filesystem "
                        "(repeatable)")
    p.add_argument("--output", required=True, help="output directory (local, gs://, s3://, ...)")
    p.add_argument("--task", choices=schema.TASKS, default="chars",
                   help="chars: GNT samples -> fixed-size images; lines: DGRL lines (and "
                        "--synth-lines) -> fixed-height images with label sequences")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help=f"chars: side of the square image; lines: image height "
                        f"({d.image_size})")
    p.add_argument("--margin", type=int, default=d.margin,
                   help=f"blank pixels around the ink ({d.margin})")
    p.add_argument("--charset", default=None,
                   help="'gb2312-1' (chars default, 3755 classes), 'gb2312+lines' (lines "
                        "default: all 6763 GB2312 hanzi, ASCII and the GB2312 symbols, 7541 "
                        "classes), 'gb2312' (6763), 'data' (every character in the inputs, GB "
                        "code order), or a charset file")
    p.add_argument("--split", choices=splits.SPLIT_MODES, default="auto",
                   help="split by writer: 'casia' (HWDB1.1 writers 1001-1240 train, 1241-1300 "
                        "test; see splits.py), 'none' (all train), 'auto' (casia if every "
                        "writer is a CASIA writer number, else none)")
    p.add_argument("--split-glob", action="append", default=[], metavar="NAME=GLOB",
                   help="the files GLOB matches form split NAME (repeatable; replaces --input)")
    p.add_argument("--validation-fraction", type=float, default=0.0,
                   help="move this fraction of the train writers (by a hash of the writer id) "
                        "to split 'validation' (0)")
    p.add_argument("--num-shards", type=int, default=0,
                   help="shards per split (0: one per 64 MiB of input, at least 16; never "
                        "more than the split's files, since shards hold whole files)")
    p.add_argument("--compression", choices=sorted(COMPRESSIONS), default="none",
                   help="shard compression (none)")
    p.add_argument("--synth-lines", type=int, default=0, metavar="N",
                   help="lines task: compose N text lines per split from the GNT samples of its "
                        "writers (for CRNN training without DGRL pages)")
    p.add_argument("--synth-line-chars", default="%d,%d" % d.synth_line_chars,
                   metavar="MIN,MAX", help="characters per synthetic line (%(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the synthetic lines (%(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the shards, rejects and metadata already in --output")
    p.add_argument("--progress-seconds", type=float, default=job_progress.DEFAULT_INTERVAL_S,
                   metavar="S",
                   help="local runner: report files done, samples, rate and rejects on stderr "
                        "every S seconds (in place on a terminal); 0: no progress lines "
                        "(%(default)s)")
    p.add_argument("--verify", action="store_true",
                   help="after the job, count the records in every shard and rejects file and "
                        "check them against metadata.json")
    synthetic_writers.add_arguments(p)
    return p


def _parse_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--synth-line-chars takes MIN,MAX. Received: {text!r}") from None
    if not 1 <= low <= high:
        raise InputError(f"--synth-line-chars needs 1 <= MIN <= MAX. Received: {text!r}")
    return low, high


def check_beam_args(beam_args: Sequence[str]) -> None:
    """Catches misspelt own flags: they would otherwise pass to Beam, which only warns.

    Beam's options are spelt with '_' and ours with '-', so an unknown '--some-thing' is a typo.
    """
    for arg in beam_args:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and "-" in name[2:] and name not in _BEAM_HYPHENATED:
            raise InputError(f"unknown flag {name!r} (see {PROG} --help; Beam pipeline "
                             f"options are spelt with '_')")


def redacted_command(argv: Sequence[str]) -> str:
    """The command line for metadata.json, with secret-looking option values replaced."""
    out, hide_next = [PROG], False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        secret = arg.startswith("--") and any(w in arg.lower() for w in _SECRET_WORDS)
        if secret and "=" in arg:
            out.append(arg.split("=", 1)[0] + "=<redacted>")
        else:
            out.append(arg)
            hide_next = secret
    return shlex.join(out)


# === Inputs ===


def _match(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of the files a glob, file or directory names, sorted."""
    if (not has_scheme(pattern) and os.path.isdir(pattern)) or pattern.endswith("/"):
        patterns = [join(pattern, "*" + ext) for ext in KINDS]
    else:
        patterns = [pattern]
    found = {}
    for pat in patterns:
        try:
            results = FileSystems.match([pat])
        except Exception as err:  # BeamIOError for unreachable buckets, bad URLs, ...
            raise InputError(f"cannot list input pattern {pattern!r}: {err}") from None
        for meta in results[0].metadata_list:
            if has_scheme(meta.path):
                found[meta.path] = meta.size_in_bytes
            elif os.path.isfile(meta.path):
                found[os.path.abspath(meta.path)] = meta.size_in_bytes
    return sorted(found.items())


def sniff(path: str, kind: str, size: int) -> None:
    """Checks that a file starts like a GNT or DGRL file, by the readers' own rules.

    Raises:
      InputError: naming the file and what is wrong with its first bytes.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        if kind == "gnt":
            problem = gnt.start_problem(f.read(min(size, 1 << 16)), size)
            if problem is not None:
                raise InputError(f"{path} is not a GNT file: {problem}")
            return
        try:
            dgrl.read_header(f, path, size)
        except CasiaFormatError as err:
            raise InputError(f"{path} is not a DGRL file: byte offset {err.offset}: "
                             f"{err.reason}") from None


def discover_inputs(args) -> tuple[list[InputFile], str, list[str]]:
    """Matches, checks and splits the inputs.

    Returns:
      (input files sorted by name, the split rule in words, the input patterns).
    """
    if args.split_glob and args.input:
        raise InputError("--split-glob names the inputs of each split: do not add --input")
    if not args.split_glob and not args.input:
        raise InputError("no input: pass --input GLOB (or --split-glob NAME=GLOB)")
    sized: dict[str, int] = {}
    glob_split: dict[str, str] = {}
    patterns = []
    if args.split_glob:
        for item in args.split_glob:
            name, sep, pattern = item.partition("=")
            if not sep or not pattern:
                raise InputError(f"--split-glob takes NAME=GLOB. Received: {item!r}")
            try:
                splits.check_split_name(name)
            except ValueError as err:
                raise InputError(f"--split-glob {item!r}: {err}") from None
            patterns.append(item)
            matched = _match(pattern)
            if not matched:
                raise InputError(f"input pattern matches no file: {pattern!r} (split {name})")
            for path, size in matched:
                if glob_split.get(path, name) != name:
                    raise InputError(f"{path} is matched by the globs of two splits: "
                                     f"{glob_split[path]!r} and {name!r}")
                glob_split[path] = name
                sized[path] = size
    else:
        for pattern in args.input:
            patterns.append(pattern)
            matched = _match(pattern)
            if not matched:
                raise InputError(f"input pattern matches no file: {pattern!r}")
            sized.update(matched)
    kinds = {}
    for path in sized:
        ext = os.path.splitext(path)[1].lower()
        if ext not in KINDS:
            raise InputError(f"{path} is not a CASIA file: expected a .gnt (HWDB1.x) or .dgrl "
                             f"(HWDB2.x) file name")
        kinds[path] = KINDS[ext]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: sniff(p, kinds[p], sized[p]), sorted(sized)))
    try:
        if glob_split:
            assignment = splits.apply_validation_fraction(glob_split, args.validation_fraction)
            rule = "globs: " + ", ".join(args.split_glob) + (
                f", validation fraction {args.validation_fraction} by sha256(writer)"
                if args.validation_fraction else "")
        else:
            assignment, rule = splits.assign_splits(sorted(sized), args.split,
                                                    args.validation_fraction)
    except ValueError as err:
        raise InputError(str(err)) from None
    names = splits.relative_names(sorted(sized))
    files = [InputFile(path=p, name=names[p], kind=kinds[p], size=sized[p],
                       writer=splits.writer_id(p), split=assignment[p]) for p in sized]
    return sorted(files, key=lambda f: f.name), rule, patterns


def load_charset(spec: str) -> Charset:
    """A named charset, or a charset file on any Beam filesystem."""
    if has_scheme(spec):
        with FileSystems.open(spec, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read()
        with tempfile.NamedTemporaryFile(suffix=".txt") as tmp:
            tmp.write(data)
            tmp.flush()
            return Charset.load(tmp.name)
    try:
        return Charset.named(spec)
    except (ValueError, OSError) as err:
        raise InputError(f"--charset {spec!r}: {err}") from None


def plan_tasks(files: Sequence[InputFile], num_shards: int, synth_lines: int
               ) -> tuple[list[ShardTask], dict, list[str]]:
    """The shard tasks of every split.

    Returns:
      (tasks, {split: static metadata}, notes for the user).
    """
    by_split = collections.defaultdict(list)
    for f in files:
        by_split[f.split].append(f)
    tasks, info, notes = [], {}, []
    for split in sorted(by_split):
        group = sorted(by_split[split], key=lambda f: f.name)
        n = num_shards or splits.auto_num_shards(len(group), sum(f.size for f in group))
        if n > len(group):
            notes.append(f"split {split!r}: {n} shards asked, {len(group)} made (a shard holds "
                         f"whole files)")
            n = len(group)
        lines_per_file = {}
        gnt_files = [f for f in group if f.kind == "gnt"]
        if synth_lines and gnt_files:
            for i, f in enumerate(gnt_files):
                lines_per_file[f.name] = (synth_lines // len(gnt_files) +
                                          (1 if i < synth_lines % len(gnt_files) else 0))
        elif synth_lines:
            notes.append(f"split {split!r} has no GNT file: no synthetic lines")
        by_name = {f.name: f for f in group}
        plan = splits.plan_shards([splits.SizedFile(f.name, f.size) for f in group], n)
        for index, names in enumerate(plan):
            shard_files = tuple(by_name[name] for name in names)
            tasks.append(ShardTask(split, index, n, shard_files,
                                   tuple(lines_per_file.get(f.name, 0) for f in shard_files)))
        info[split] = {"num_shards": n, "num_files": len(group),
                       "num_writers": len({f.writer for f in group})}
        if synth_lines:
            info[split]["synth_lines"] = synth_lines if gnt_files else 0
    # Largest tasks first, so a static round-robin over workers stays balanced.
    tasks.sort(key=lambda t: (-sum(f.size for f in t.files), t.split, t.index))
    return tasks, info, notes


def check_output_dir(output: str) -> None:
    """Refuses an `output` the job could not write: a URL whose scheme no installed Beam
    filesystem serves, or a local path that is (or lies under) something other than a
    directory."""
    if has_scheme(output):
        try:
            FileSystems.get_filesystem(output)
        except Exception:  # ValueError or BeamIOError, depending on the scheme
            scheme = output.split("://", 1)[0]
            raise InputError(f"--output {output}: no Beam filesystem for {scheme}:// is "
                             f"installed here (apache-beam[gcp] serves gs://, [aws] s3://, "
                             f"[hadoop] hdfs://, [azure] az://)") from None
        return  # object stores have no files in the way of a prefix
    path = os.path.abspath(output)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        what = "is a file" if path == os.path.abspath(output) else f"lies under the file {path}"
        raise InputError(f"--output {output} {what}, not a directory")


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuses to mix with an earlier dataset in `output` unless `overwrite` (then deletes it)."""
    check_output_dir(output)
    old = []
    for pattern in ("*.tfrecord*", schema.METADATA_FILE, schema.CHARSET_FILE,
                    f"{schema.REJECTS_DIR}/*.jsonl", f"{synthetic_writers.SYNTH_DIR}/*"):
        try:
            old += [m.path for m in
                    FileSystems.match([join(output, pattern)])[0].metadata_list]
        except Exception:  # a missing directory or bucket prefix: nothing to replace
            continue
    if old and not overwrite:
        raise InputError(f"{output} already holds a preprocessed dataset ({len(old)} files, e.g. "
                         f"{old[0]}); pass --overwrite to replace it")
    if old:
        FileSystems.delete(old)


# === The job ===


@dataclasses.dataclass
class JobReport:
    """What `run` did: metadata.json as written, the Beam counters, and the reconciliation."""
    output: str
    metadata: dict
    counters: dict
    problems: list
    notes: list
    seconds: float
    counters_available: bool = True  # False: the runner keeps no Beam counters (DaskRunner)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        md = self.metadata
        c = md.get("counts", {})
        lines = [f"{PROG}: {md.get('task')} -> {self.output} in {self.seconds:.1f}s "
                 f"(splits: {md.get('split_rule')}; charset: {md.get('charset')}, "
                 f"{md.get('num_classes')} classes)"]
        for split, info in md.get("splits", {}).items():
            lines.append(f"  {split:<12} {info['num_examples']:>10,} examples in "
                         f"{info['num_shards']} shards from {info['num_files']} files "
                         f"({info['num_writers']} writers)")
        extra = (f" + {c.get('pooled', 0):,} pooled into {c.get('synthesized', 0):,} synthetic "
                 f"lines" if c.get("pooled") or c.get("synthesized") else "")
        lines.append(f"  read {c.get('read', 0):,} = written {c.get('written', 0):,} + rejected "
                     f"{c.get('rejected', 0):,}{extra}")
        for reason, n in md.get("rejects", {}).items():
            lines.append(f"    rejected {reason}: {n:,}")
        if md.get("rejects"):
            lines.append(f"    details: {join(self.output, schema.REJECTS_DIR)}/")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for problem in self.problems:
            lines.append(f"  ERROR: {problem}")
        if not self.ok:
            lines.append("  FAILED: the counts do not reconcile")
        elif self.counters_available:
            lines.append("  OK: every record read is in a shard or in rejects/")
        else:
            lines.append("  OK: every record read is in a shard or in rejects/ (counted in the "
                         "written files: no Beam counters to cross-check)")
        return "\n".join(lines)


def _read_json(path: str) -> dict:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read().decode("utf-8"))


def query_counters(result) -> dict | None:
    """The job's Beam counters (committed where the runner has them), summed over steps; None
    when the runner keeps none (Beam's DaskRunner raises NotImplementedError)."""
    from apache_beam.metrics.metric import MetricsFilter
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(transforms.NAMESPACE))
    except NotImplementedError:
        return None
    totals = collections.Counter()
    for counter in found.get("counters", []):
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] += int(value or 0)
    return dict(totals)


def reconcile(metadata: dict, counters: dict) -> list[str]:
    """Every way the outputs fail to account for the inputs, in words (empty when they do)."""
    problems = []
    c = metadata["counts"]
    pooled = c.get("pooled", 0)
    if c["read"] != c["written"] + c["rejected"] + pooled:
        problems.append(f"read {c['read']} != written {c['written']} + rejected {c['rejected']}"
                        + (f" + pooled {pooled}" if pooled else ""))
    examples = sum(s["num_examples"] for s in metadata["splits"].values())
    if examples != c["written"] + c.get("synthesized", 0):
        problems.append(f"the splits hold {examples} examples, not written {c['written']}"
                        + (f" + synthesized {c['synthesized']}" if c.get("synthesized") else ""))
    if sum(metadata["rejects"].values()) != c["rejected"]:
        problems.append(f"rejects by reason add up to {sum(metadata['rejects'].values())}, not "
                        f"{c['rejected']}")
    for split, info in metadata["splits"].items():
        if info.get("shards_written") != info["num_shards"]:
            problems.append(f"split {split}: {info.get('shards_written')} of "
                            f"{info['num_shards']} shards written")
    if counters:
        for name in ("read", "written", "rejected"):
            if counters.get(name, 0) != c[name]:
                problems.append(f"Beam counter {name} = {counters.get(name, 0)} but "
                                f"metadata.json says {c[name]}")
    return problems


def verify_outputs(output: str, metadata: dict) -> list[str]:
    """Counts the records in the shards and rejects files and compares them with metadata."""
    problems = []
    compression = metadata["compression"]
    for split, info in metadata["splits"].items():
        paths = sorted(m.path for m in FileSystems.match(
            [join(output, schema.shard_pattern(split))])[0].metadata_list)
        if len(paths) != info["num_shards"]:
            problems.append(f"split {split}: {len(paths)} shard files, metadata says "
                            f"{info['num_shards']}")
        records = 0
        for path in paths:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                records += sum(1 for _ in iter_records(f, compression, name=path))
        if records != info["num_examples"]:
            problems.append(f"split {split}: {records} records in the shards, metadata says "
                            f"{info['num_examples']}")
    try:
        reject_files = FileSystems.match(
            [join(output, schema.REJECTS_DIR, "*.jsonl")])[0].metadata_list
    except Exception:
        reject_files = []
    lines = 0
    for meta in reject_files:
        with FileSystems.open(meta.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            lines += sum(1 for line in f.read().splitlines() if line.strip())
    if lines != metadata["counts"]["rejected"]:
        problems.append(f"{lines} lines in rejects/, metadata says "
                        f"{metadata['counts']['rejected']} rejected")
    return problems


def missing_outputs(output: str, tasks: Sequence[ShardTask], compression: str) -> list[str]:
    """The planned shards and charset.txt that are not in `output` after the run, in words:
    a runner that skipped a step leaves them out."""
    found = set()
    for split in sorted({t.split for t in tasks}):
        found.update(os.path.basename(m.path.rstrip("/")) for m in FileSystems.match(
            [join(output, schema.shard_pattern(split))])[0].metadata_list)
    missing = sorted(name for name in {schema.shard_name(t.split, t.index, t.count,
                                                         compression) for t in tasks}
                     if name not in found)
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(tasks)} planned shards are missing after the "
                        f"run, e.g. {join(output, missing[0])}")
    if not FileSystems.exists(join(output, schema.CHARSET_FILE)):
        problems.append(f"{schema.CHARSET_FILE} was not written")
    return problems


def check_accounts(output: str, metadata: dict, counters: dict | None, verify: bool
                   ) -> tuple[list[str], list[str]]:
    """Reconciles metadata.json with itself and with the Beam counters; with `verify`, or when
    the runner keeps no counters (`counters` None), with the records counted in the written
    shards and rejects files.

    Returns:
      (problems, notes), each in words.
    """
    problems = reconcile(metadata, counters or {})
    notes = []
    if counters is None:
        notes.append("the runner keeps no Beam counters, so the counter cross-check was not "
                     "possible: reconciled with the records counted in the written shards and "
                     "rejects files instead")
    if verify or counters is None:
        problems += verify_outputs(output, metadata)
    return problems, notes


def choose_runner(options: PipelineOptions) -> tuple[str | None, list[str]]:
    """Resolves `--runner` (short names included, e.g. DaskRunner) into `options` and checks
    that the runner can start; returns (the runner Beam loads or None for the local one, notes).
    """
    try:
        path = runners.resolve_runner(options.view_as(StandardOptions).runner)
        notes = runners.prepare_dask(options) if path == runners.DASK_RUNNER else []
    except runners.RunnerError as err:
        raise InputError(str(err)) from None
    if path is not None:
        options.view_as(StandardOptions).runner = path
    return path, notes


def _remove_temporaries(output: str) -> None:
    for pattern in (transforms.TMP_PREFIX + "*",
                    f"{schema.REJECTS_DIR}/{transforms.TMP_PREFIX}*"):
        try:
            leftovers = [m.path for m in FileSystems.match(
                [join(output, pattern)])[0].metadata_list]
            if leftovers:
                FileSystems.delete(leftovers)
        except Exception:  # cleanup is best effort: temporaries never match shard globs
            pass


def build_pipeline(pipeline: beam.Pipeline, files: Sequence[InputFile],
                   tasks: Sequence[ShardTask], config: JobConfig, static: dict,
                   charset_chars: Sequence[str] | None = None, progress_dir: str | None = None):
    """Adds the job's steps to `pipeline`.

    Args:
      files: every input file (scanned for characters when `charset_chars` is None).
      tasks: the shard plan (`plan_tasks`).
      config: what the workers need.
      static: the driver-side fields of metadata.json.
      charset_chars: the classes in order, or None to build the charset from the data.
      progress_dir: a local directory for the workers' running totals (local runner), or None.

    Returns:
      The PCollection holding the metadata dict written to metadata.json.
    """
    if charset_chars is not None:
        charset = transforms.named_charset(pipeline, charset_chars)
    else:
        charset = (pipeline
                   | "Files" >> beam.Create(list(files))
                   | "DistributeFiles" >> beam.Reshuffle()
                   | "BuildCharset" >> transforms.BuildCharset())
    return (pipeline
            | "WriteShards" >> transforms.WriteShards(tasks, config, charset, progress_dir)
            | "Summarize" >> beam.CombineGlobally(transforms.Summarize())
            | "WriteMetadata" >> beam.ParDo(transforms.WriteMetadataFn(config, static),
                                            beam.pvalue.AsSingleton(charset)))


def run(argv: Sequence[str] | None = None) -> JobReport:
    """Runs the job; returns its report (raises `InputError` for bad flags or inputs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, beam_args = build_parser().parse_known_args(argv)
    check_beam_args(beam_args)
    start = time.monotonic()
    options = PipelineOptions(beam_args)
    FileSystems.set_options(options)

    if args.image_size - 2 * args.margin < 1 or args.margin < 0:
        raise InputError(f"--image-size {args.image_size} leaves no room inside --margin "
                         f"{args.margin}")
    if args.synth_lines < 0 or args.num_shards < 0 or args.progress_seconds < 0:
        raise InputError("--synth-lines, --num-shards and --progress-seconds cannot be negative")
    if args.synth_lines and args.task != "lines":
        raise InputError("--synth-lines composes text lines: use it with --task lines")
    files, rule, patterns = discover_inputs(args)
    kinds = collections.Counter(f.kind for f in files)
    if args.task == "chars" and kinds["dgrl"]:
        raise InputError(f"{kinds['dgrl']} .dgrl file(s) among the inputs: DGRL files hold text "
                         f"lines, use --task lines")
    if args.task == "lines" and kinds["gnt"] and not args.synth_lines:
        raise InputError(f"{kinds['gnt']} .gnt file(s) among the inputs of --task lines: pass "
                         f"--synth-lines N to compose text lines from their samples")
    charset_spec = args.charset or DEFAULT_CHARSETS[args.task]
    named = None if charset_spec == "data" else load_charset(charset_spec)
    synthetic = None
    if args.synth_writers:  # checked before prepare_output deletes anything
        try:
            synthetic = synthetic_writers.plan(files, None if named is None else named.chars,
                                               args.synth_writers, args.synth_seed, args.task,
                                               args.output)
        except synthetic_writers.SynthWritersError as err:
            raise InputError(str(err)) from None
        named = Charset(synthetic.chars)  # `--charset data` is now read: not built again

    config = JobConfig(task=args.task, output=args.output, image_size=args.image_size,
                       margin=args.margin, compression=COMPRESSIONS[args.compression],
                       seed=args.seed, synth_line_chars=_parse_range(args.synth_line_chars))
    runner_path, runner_notes = choose_runner(options)
    prepare_output(args.output, args.overwrite)
    synthetic_entry = None
    if synthetic is not None:  # rendered only once the output may be written
        files, synthetic_entry = synthetic_writers.render(
            synthetic, args.output, files, progress=args.progress_seconds > 0)
    tasks, split_info, notes = plan_tasks(files, args.num_shards, args.synth_lines)
    notes += runner_notes
    if synthetic_entry:
        notes.append(synthetic_writers.describe(synthetic_entry, args.output))
    static = {
        "splits": split_info,
        "split_rule": rule,
        "charset": charset_spec,
        "inputs": patterns,
        **({"seed": args.seed, "synth_lines": args.synth_lines} if args.synth_lines else {}),
        **({"synthetic_writers": synthetic_entry} if synthetic_entry else {}),
        "command": redacted_command(argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }

    runner = None
    if runner_path in (None, "DirectRunner"):
        if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
            # Local worker processes otherwise log every channel they open at INFO.
            options = PipelineOptions(beam_args + ["--default_sdk_harness_log_level=WARNING"])
        runner = beam_private.fn_api_runner(options)
    with contextlib.ExitStack() as stack:
        progress_dir = None
        if runner is not None and args.progress_seconds > 0:
            # The local runner returns only when the job is done: its workers (threads or
            # processes on this machine) leave running totals in a local directory instead.
            progress_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hccr-progress-"))
        pipeline = beam.Pipeline(runner=runner, options=options)
        build_pipeline(pipeline, files, tasks, config, static,
                       None if named is None else named.chars, progress_dir)
        if runners.runs_last_step_only(runner_path):
            try:
                runners.check_last_step_needs_all(pipeline, runner_path)
            except runners.RunnerError as err:
                raise InputError(str(err)) from None
        if progress_dir is not None:
            stack.enter_context(job_progress.ProgressReporter(
                progress_dir, len(files), args.progress_seconds, prefix=f"{PROG}: "))
        elif runner is None and args.progress_seconds > 0:
            print(f"{PROG}: {job_progress.runner_ui_hint(runner_path, options)}",
                  file=sys.stderr, flush=True)
        result = pipeline.run()
        result.wait_until_finish()
    if runner_path == runners.DASK_RUNNER:
        runners.close_dask_client(result)

    counters = query_counters(result)
    problems = missing_outputs(args.output, tasks, config.compression)
    metadata_path = join(args.output, schema.METADATA_FILE)
    if not FileSystems.exists(metadata_path):
        _remove_temporaries(args.output)
        problems.append(f"{metadata_path} was not written: the runner did not run the job's "
                        f"last step")
        return JobReport(args.output, {}, counters or {}, problems, notes,
                         time.monotonic() - start, counters is not None)
    metadata = _read_json(metadata_path)
    account_problems, account_notes = check_accounts(args.output, metadata, counters,
                                                     args.verify)
    problems += account_problems
    notes += account_notes
    _remove_temporaries(args.output)
    if metadata["counts"].get("synth_missing"):
        notes.append(f"{metadata['counts']['synth_missing']} synthetic lines not made: their "
                     f"files had no usable sample")
    return JobReport(args.output, metadata, counters or {}, problems, notes,
                     time.monotonic() - start, counters is not None)


@cli_errors.entry_point("hccr-preprocess")
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 when every record is accounted for, 1 when not, 2 for bad input."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run(argv)
    except InputError as err:
        cli_errors.show_traceback(err)
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(report.summary(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
