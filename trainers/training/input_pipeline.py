"""tf.data input pipelines over a preprocessed directory (or the seed's MNIST digits).

Pure functions over feature dicts: records are parsed into `{"image", "label"}` (characters) or
`{"image", "labels", "label_length", "width"}` (text lines) and turned into Keras `(x, y)` pairs
at the very end (`to_keras`).

Training pipeline (characters)::

    shard files (tf.distribute auto-shard policy, or by Horovod rank)
      -> interleave TFRecord readers -> [cache] -> shuffle -> repeat -> [curriculum filter]
      -> batch(drop_remainder) -> parse the batch (vectorized) -> augment the batch
      -> prefetch

Text lines are parsed one by one (their widths differ), then padded into batches bucketed by
width; padding is background (0.0) and label padding is the CTC blank (0).

Batch sizes are explicit: the caller passes the batch size of *this* dataset, which is the
global batch under tf.distribute (it splits every batch over its replicas) and the per-replica
batch under Horovod (one dataset per rank).
`trainers.training.strategy.Distribution.dataset_batch_size` computes it.

Images arrive as uint8 with background 255 (the CASIA convention) and leave as float32 in
[0, 1] with ink 1.0: `image = 1 - raw / 255`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re

import numpy as np
import tensorflow as tf

from beam_preprocess.contract import metadata, schema
from beam_preprocess.contract.charset import Charset
from beam_preprocess.contract.fileio import join
from models.crnn import CRNN_WIDTH_DOWNSAMPLE
from trainers.training import augment as augment_lib

AUTOTUNE = tf.data.AUTOTUNE
MNIST_SIZE = 28


class MissingSplitError(KeyError, ValueError):
    """A split the data does not have; one line naming the splits it has (a KeyError for
    older callers, a ValueError for the CLIs' user-error handling)."""

    def __init__(self, split: str, available: list, where: str = "the data"):
        self.split, self.available = split, available
        super().__init__(f"no split {split!r} in {where}; it has "
                         f"{', '.join(map(repr, available)) or 'none'}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass
class DataSource:
    """What the pipelines read: a preprocessed directory, or in-memory digit arrays.

    Attributes:
      task: "chars" or "lines".
      image_height, image_width: stored image size (width None for lines).
      charset: the classes (None for digits: classes 0-9).
      num_classes: number of classes (charset size).
      compression: "" or "GZIP".
      files: {split: sorted shard paths} (preprocessed directories).
      counts: {split: number of examples}.
      arrays: {split: (images uint8 (N, H, W) background 255, labels int64 (N,))} (digits).
      info: the `metadata.load` result (preprocessed directories).
    """
    task: str
    image_height: int
    image_width: int | None
    num_classes: int
    charset: Charset | None = None
    compression: str = ""
    files: dict = dataclasses.field(default_factory=dict)
    counts: dict = dataclasses.field(default_factory=dict)
    arrays: dict | None = None
    info: metadata.DatasetInfo | None = None

    @property
    def image_shape(self) -> tuple:
        return (self.image_height, self.image_width, 1)

    def naming_damaged_shards(self):
        """A context in which reading a damaged shard of this source raises a
        `DamagedShardError` naming the file (see `naming_damaged_shards`)."""
        return naming_damaged_shards([f for files in self.files.values() for f in files],
                                     self.compression)

    def num_examples(self, split: str) -> int:
        if split not in self.counts:
            raise MissingSplitError(split, sorted(self.counts))
        return self.counts[split]


# === Sources ===


def open_preprocessed(data_dir: str) -> DataSource:
    """Reads `metadata.json`, `charset.txt` and the shard lists of a preprocessed directory.

    Args:
      data_dir: a directory written by hccr-preprocess, on any tf.io.gfile scheme (s3:// and
        hdfs:// through tensorflow-io).

    Returns:
      A DataSource with every split's shards: exactly those metadata.json lists (see
      `listed_shards`), never other files that match the shard pattern.

    Raises:
      FileNotFoundError: no metadata.json, or a shard it lists is missing.
    """
    info = metadata.load(data_dir)
    files, counts = {}, {}
    for split in info.splits:
        files[split] = listed_shards(info, split)
        counts[split] = info.num_examples(split)
    return DataSource(task=info.task, image_height=info.image_height,
                      image_width=info.image_width, num_classes=info.num_classes,
                      charset=info.charset, compression=info.compression, files=files,
                      counts=counts, info=info)


def listed_shards(info: metadata.DatasetInfo, split: str) -> list[str]:
    """The shard paths of a split that metadata.json lists: `num_shards` names
    `<split>-<i>-of-<num_shards>.tfrecord[.gz]`.

    Other files matching the shard pattern (left over from an earlier run into the same
    directory with another shard count or compression) are never read; they are named in a
    warning.

    Raises:
      FileNotFoundError: a listed shard is missing.
      ValueError: metadata.json gives the split no shard count.
    """
    from beam_preprocess.contract.tfio import gfile  # registers tensorflow-io's schemes
    where = join(info.data_dir, schema.METADATA_FILE)
    count = info.splits.get(split, {}).get("num_shards")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"{where}: split {split!r} has no valid num_shards (got {count!r})")
    paths = [join(info.data_dir, schema.shard_name(split, i, count, info.compression))
             for i in range(count)]
    fs = gfile()
    for path in paths:
        if not fs.exists(path):
            raise FileNotFoundError(f"{path}: shard {split!r} listed in {where} is missing")
    listed = set(paths)
    stale = sorted(p for p in fs.glob(info.shard_glob(split)) if p not in listed)
    if stale:
        logging.getLogger(__name__).warning(
            "%s: ignoring %d shard file(s) that %s does not list (an earlier run's?): %s",
            info.data_dir, len(stale), where, ", ".join(os.path.basename(p) for p in stale))
    return paths


# === Damaged shards ===


class DamagedShardError(ValueError):
    """A truncated or corrupt TFRecord shard, named with the first record that fails."""


def find_damaged_shard(files: list[str], compression: str = "") -> tuple[str, int, str] | None:
    """The first shard that cannot be read to its end: (path, records read before the damage,
    TensorFlow's message), or None when every shard reads."""
    for path in files:
        records = 0
        try:
            for _ in tf.data.TFRecordDataset(path, compression_type=compression or None):
                records += 1
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            # Without TensorFlow's op context: "truncated record at 37691' failed with ...".
            message = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:[^\]]*\].*$", "", err.message)
            return path, records, " ".join(message.split())
    return None


@contextlib.contextmanager
def naming_damaged_shards(files: list[str], compression: str = ""):
    """Turns TensorFlow's DataLossError from reading these shards (a truncated or corrupt
    record: its message names no file) into a `DamagedShardError` naming the shard.

    The shards are read once more, one by one, to find it; when they all read (the error came
    from elsewhere), the original error is raised.
    """
    try:
        yield
    except tf.errors.DataLossError as err:
        found = find_damaged_shard(files, compression)
        if found is None:
            raise
        path, records, message = found
        raise DamagedShardError(f"{path}: damaged TFRecord shard after record {records}: "
                                f"{message}") from err


def load_digits_arrays(source: str, *, validation_fraction: float = 0.2, seed: int = 0) -> dict:
    """The seed's MNIST path, without a download.

    Args:
      source: a local `mnist.npz` in the Keras layout (x_train, y_train, x_test, y_test), or
        "digits" for scikit-learn's 1,797 real 8x8 digits (shipped inside the package),
        resized to 20x20 and centred on a 28x28 canvas like MNIST.
      validation_fraction: the share of the training images held out as "validation".
      seed: the seed of that split.

    Returns:
      {split: (images uint8 (N, 28, 28) background 255, labels int64 (N,))} with splits
      "train" and "validation" (an npz's test set is also available as "test", and never
      used as "validation").
    """
    if source == "digits":
        from sklearn.datasets import load_digits
        digits = load_digits()
        ink = tf.image.resize(digits.images[..., None].astype(np.float32) / 16.0, (20, 20),
                              method="bilinear").numpy()[..., 0]
        ink = np.pad(ink, ((0, 0), (4, 4), (4, 4)))
        images = (255 - np.clip(ink, 0, 1) * 255).round().astype(np.uint8)
        labels = digits.target.astype(np.int64)
        order = np.random.default_rng(seed).permutation(len(labels))
        cut = int(round(len(labels) * (1 - validation_fraction)))
        return {"train": (images[order[:cut]], labels[order[:cut]]),
                "validation": (images[order[cut:]], labels[order[cut:]])}
    path = os.path.expanduser(source)
    if not path.endswith(".npz") or not os.path.isfile(path):
        raise FileNotFoundError(f"--data for the mnist dataset is a local mnist.npz (Keras "
                                f"layout) or 'digits'. Received: {source!r}")
    with np.load(path) as npz:
        # MNIST stores ink as high values: flip to the project's background-255 convention.
        def flip(x):
            return (255 - x).astype(np.uint8)
        images, labels = flip(npz["x_train"]), npz["y_train"].astype(np.int64)
        test = (flip(npz["x_test"]), npz["y_test"].astype(np.int64))
    # Model selection never sees the test set: validation is held out of the training set.
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(round(len(labels) * (1 - validation_fraction)))
    return {"train": (images[order[:cut]], labels[order[:cut]]),
            "validation": (images[order[cut:]], labels[order[cut:]]), "test": test}


def open_digits(source: str, seed: int = 0) -> DataSource:
    """A DataSource over `load_digits_arrays(source)` (10 classes, 28x28)."""
    arrays = load_digits_arrays(source, seed=seed)
    return DataSource(task="chars", image_height=MNIST_SIZE, image_width=MNIST_SIZE,
                      num_classes=10, arrays=arrays,
                      counts={split: len(labels) for split, (_, labels) in arrays.items()})


# === Parsing ===


def normalize(raw: tf.Tensor) -> tf.Tensor:
    """uint8 images (..., H, W), background 255 -> float32 (..., H, W, 1), ink 1.0."""
    return (1.0 - tf.cast(raw, tf.float32) / 255.0)[..., None]


def parse_chars_batch(serialized: tf.Tensor, height: int, width: int) -> dict:
    """Parses a batch of serialized "chars" records.

    Args:
      serialized: string `(batch,)`.
      height, width: the stored image size (metadata.json).

    Returns:
      {"image": float32 (batch, height, width, 1), "label": int32 (batch,)}.
    """
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}
    features = tf.io.parse_example(serialized, spec)
    raw = tf.io.decode_raw(features["image"], tf.uint8)
    images = tf.reshape(raw, [-1, height, width])
    return {"image": normalize(images), "label": tf.cast(features["label"], tf.int32)}


def parse_line(serialized: tf.Tensor, height: int) -> dict:
    """Parses one serialized "lines" record.

    Returns:
      {"image": float32 (height, width, 1), "labels": int32 (L,) CTC class ids (charset id
      + 1; 0 is the blank), "label_length": int32 (), "width": int32 ()}.
    """
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "width": tf.io.FixedLenFeature([], tf.int64),
            "labels": tf.io.VarLenFeature(tf.int64)}
    features = tf.io.parse_single_example(serialized, spec)
    width = tf.cast(features["width"], tf.int32)
    raw = tf.reshape(tf.io.decode_raw(features["image"], tf.uint8), [height, width])
    labels = tf.cast(tf.sparse.to_dense(features["labels"]), tf.int32) + 1
    return {"image": normalize(raw), "labels": labels,
            "label_length": tf.size(labels, out_type=tf.int32), "width": width}


def label_of_record(serialized: tf.Tensor) -> tf.Tensor:
    """The class id of one serialized "chars" record (for the curriculum filter)."""
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    return tf.cast(tf.io.parse_single_example(serialized, spec)["label"], tf.int32)


def to_keras(batch: dict) -> tuple:
    """Feature dict -> Keras `(x, y)`.

    Characters: `(image, label)`, or after `mixup_batches` `(image, mixed)` with float32
    `mixed` `(batch, 3)` = [label, partner's label, weight of label]
    (`trainers.training.losses.SparseCrossEntropy` and `MixupSparseAccuracy` read it).
    Lines: `(image, packed)` where `packed` is int32 `(batch, 2 + max_label_length)` =
    [label_length, logit_length, class ids padded with 0]
    (`trainers.training.losses.PackedCTCLoss` unpacks it; logit_length = unpadded width //
    `CRNN_WIDTH_DOWNSAMPLE`, the CRNN's time steps: `models.crnn_time_steps`).
    """
    if "labels" in batch:
        logit_length = batch["width"] // CRNN_WIDTH_DOWNSAMPLE
        packed = tf.concat([batch["label_length"][:, None], logit_length[:, None],
                            batch["labels"]], axis=1)
        return batch["image"], packed
    if "mix_label" in batch:  # mixup: float32 (batch, 3) = [label, partner's label, weight]
        return batch["image"], tf.stack([tf.cast(batch["label"], tf.float32),
                                         tf.cast(batch["mix_label"], tf.float32),
                                         batch["mix_weight"]], axis=1)
    return batch["image"], batch["label"]


# === Datasets ===


def read_records(files: list[str], *, compression: str = "", training: bool,
                 shard: tuple | None = None, seed: int = 0) -> tf.data.Dataset:
    """Serialized records of a list of shards.

    Args:
      files: shard paths (any tf.io.gfile scheme).
      compression: "" or "GZIP".
      training: shuffle the file order and interleave without a fixed order.
      shard: `(num_shards, index)` to read only this worker's part (Horovod); by file when
        there are at least as many files as shards, otherwise by record. None: read all
        (tf.distribute shards the dataset itself with its auto-shard policy).
      seed: seed of the file shuffle.

    Returns:
      A dataset of scalar strings.
    """
    files_ds = tf.data.Dataset.from_tensor_slices(list(files))
    shard_records = False
    if shard is not None and shard[0] > 1:
        if len(files) >= shard[0]:
            files_ds = files_ds.shard(*shard)  # Horovod: this rank's files
        else:
            shard_records = True
    if training and len(files) > 1:
        files_ds = files_ds.shuffle(len(files), seed=seed)
    records = files_ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression or None,
                                             buffer_size=1 << 20),
        cycle_length=min(len(files), 8), block_length=1, num_parallel_calls=AUTOTUNE,
        deterministic=not training)
    if shard_records:
        records = records.shard(*shard)  # Horovod: fewer files than ranks
    return records


def make_dataset(source: DataSource, split: str, *, batch_size: int, training: bool,
                 augment: augment_lib.AugmentParams | None = None, shard: tuple | None = None,
                 num_input_workers: int = 1, shuffle_buffer: int = 10_000, cache: bool = False,
                 seed: int = 0, curriculum_classes: tf.Variable | None = None,
                 bucket_boundaries: tuple = (), take_batches: int = 0,
                 mixup_alpha: float = 0.0) -> tf.data.Dataset:
    """The Keras `(x, y)` dataset of a split.

    The steps, in order: the source's records (`source_records`), [cache], training's
    shuffle, repeat and curriculum filter, batches of feature dicts (`batch_examples`),
    training's augmentation (`augment_batches`) and mixup (`mixup_batches`), `to_keras`,
    [take, cache], prefetch.

    Args:
      source: `open_preprocessed(...)` or `open_digits(...)`.
      split: split name, e.g. "train".
      batch_size: the batch size of this dataset (global under tf.distribute, per replica
        under Horovod; see the module docstring).
      training: shuffle, repeat forever, drop the last partial batch and augment; otherwise
        one ordered pass, the last batch kept, never augmented.
      augment: augmentation ranges, or None for none (ignored unless training).
      shard: `(num_shards, index)`: read only this part (Horovod ranks); None lets
        tf.distribute auto-shard (by file when every input worker gets a file, else by record).
      num_input_workers: input pipelines tf.distribute will shard over (for the policy).
      shuffle_buffer: records in the shuffle buffer.
      cache: keep the serialized records in memory after the first pass (evaluation with
        `take_batches`: the batches taken, since the records would never be read fully).
      seed: seed of the shuffles and of the augmentation.
      curriculum_classes: int32 variable; training keeps only labels below its current value
        (characters only), so a callback can grow the class set between epochs.
      bucket_boundaries: lines: width boundaries of the padded batches.
      take_batches: > 0: stop after this many batches (evaluation).
      mixup_alpha: > 0: training batches of characters through `mixup_batches`.

    Returns:
      A `tf.data.Dataset` of `(x, y)` pairs (see `to_keras`).
    """
    records, policy = source_records(source, split, training=training, shard=shard,
                                     num_input_workers=num_input_workers, seed=seed)
    # Evaluation that stops after `take_batches` never reads its records to the end: a records
    # cache would be discarded after every pass, with TF's warning "The calling iterator did
    # not fully read the dataset being cached". Cache the batches taken instead: evaluation is
    # ordered and unaugmented, so they are the same batches on every pass.
    cache_taken_batches = cache and not training and take_batches > 0
    if cache and not cache_taken_batches:
        records = records.cache()
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        records = records.repeat()
        if curriculum_classes is not None:
            records = keep_classes_below(records, source, curriculum_classes)
    batches = batch_examples(records, source, batch_size, drop_remainder=training,
                             bucket_boundaries=bucket_boundaries)
    if training and augment is not None:
        batches = augment_batches(batches, augment, seed)
    if training and mixup_alpha > 0:
        if source.task != "chars":
            raise ValueError(f"mixup_alpha={mixup_alpha}: mixup blends character images and "
                             f"their labels; this data holds task {source.task!r}")
        batches = mixup_batches(batches, mixup_alpha, seed)
    batches = batches.map(to_keras, num_parallel_calls=AUTOTUNE)
    if take_batches:
        batches = batches.take(take_batches)
        if cache_taken_batches:
            batches = batches.cache()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    if not training:
        options = options.merge(finite_pass_options())
    return batches.with_options(options).prefetch(AUTOTUNE)


def finite_pass_options() -> tf.data.Options:
    """Options for a dataset read in one pass and then dropped (evaluation, and Keras fit's
    validation, whose iterator is replaced every epoch): tf.data autotuning off.

    Ending an autotuned iterator sometimes waits at 0 % CPU for a tf.data thread: py-spy shows
    the main thread in `RootDataset::Iterator::~Iterator`, waiting in
    `UnboundedThreadPool::LogicalThreadWrapper`'s destructor. That the thread is autotuning's is
    inferred from this fix: without autotuning the stall has not recurred. Measured on this
    project's 2-core CPU: 3-39 s at the end of some validations (47 s of a 7.7-minute demo CRNN
    run) and 28 s at the end of some hccr-eval runs (docs/benchmarks.md). Without autotuning,
    maps with AUTOTUNE parallelism run on as many threads as tf.data's pool has, which one pass
    needs.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


# --- The steps of make_dataset ---


def source_records(source: DataSource, split: str, *, training: bool, shard: tuple | None,
                   num_input_workers: int, seed: int) -> tuple:
    """The records of a split, and the tf.distribute auto-shard policy that suits them.

    Returns:
      `(records, policy)`: serialized records (`shard_records`) or digit dicts
      (`digit_records`), and an `AutoShardPolicy`.

    Raises:
      MissingSplitError: the source has no such split.
    """
    if source.arrays is not None:
        if split not in source.arrays:
            raise MissingSplitError(split, sorted(source.arrays))
        return digit_records(source.arrays[split], shard=shard)
    files = source.files.get(split)
    if not files:
        raise MissingSplitError(split, sorted(source.files))
    return shard_records(files, compression=source.compression, training=training, shard=shard,
                         num_input_workers=num_input_workers, seed=seed)


def digit_records(arrays: tuple, *, shard: tuple | None) -> tuple:
    """`(images, labels)` arrays -> (`{"image": uint8 (H, W), "label": int64}` records, DATA)."""
    images, labels = arrays
    records = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    if shard is not None and shard[0] > 1:
        records = records.shard(*shard)  # Horovod: this rank's examples
    return records, tf.data.experimental.AutoShardPolicy.DATA


def shard_records(files: list[str], *, compression: str, training: bool, shard: tuple | None,
                  num_input_workers: int, seed: int) -> tuple:
    """Shard paths -> (serialized records (`read_records`), auto-shard policy)."""
    records = read_records(files, compression=compression, training=training, shard=shard,
                           seed=seed)
    # tf.distribute (MultiWorker): whole files per worker when every worker gets one,
    # else by record.
    policy = (tf.data.experimental.AutoShardPolicy.FILE
              if training and len(files) >= num_input_workers
              else tf.data.experimental.AutoShardPolicy.DATA)
    return records, policy


def keep_classes_below(records: tf.data.Dataset, source: DataSource,
                       num_classes: tf.Variable) -> tf.data.Dataset:
    """The class curriculum: only records whose label is below the variable's current value.

    Raises:
      ValueError: the source holds text lines (a curriculum needs task "chars").
    """
    if source.task != "chars":
        raise ValueError(f"a class curriculum needs task 'chars'. Received: {source.task!r}")
    if source.arrays is not None:
        return records.filter(lambda r: tf.cast(r["label"], tf.int32) < num_classes)
    return records.filter(lambda r: label_of_record(r) < num_classes)


def batch_examples(records: tf.data.Dataset, source: DataSource, batch_size: int, *,
                   drop_remainder: bool, bucket_boundaries: tuple = ()) -> tf.data.Dataset:
    """Records (of `source_records`) -> batches of feature dicts, by source and task."""
    if source.task != "chars":
        return batch_lines(records, source.image_height, batch_size,
                           drop_remainder=drop_remainder, bucket_boundaries=bucket_boundaries)
    if source.arrays is not None:
        return batch_digits(records, batch_size, drop_remainder=drop_remainder)
    return batch_chars(records, source.image_height, source.image_width, batch_size,
                       drop_remainder=drop_remainder)


def batch_digits(records: tf.data.Dataset, batch_size: int, *,
                 drop_remainder: bool) -> tf.data.Dataset:
    """Digit dicts -> batches `{"image": float32 (B, H, W, 1), "label": int32 (B,)}`."""
    def decode(r):
        return {"image": normalize(r["image"]), "label": tf.cast(r["label"], tf.int32)}
    return records.batch(batch_size, drop_remainder=drop_remainder).map(
        decode, num_parallel_calls=AUTOTUNE)


def batch_chars(records: tf.data.Dataset, height: int, width: int, batch_size: int, *,
                drop_remainder: bool) -> tf.data.Dataset:
    """Serialized "chars" records -> batches parsed at once (`parse_chars_batch`)."""
    return records.batch(batch_size, drop_remainder=drop_remainder).map(
        lambda r: parse_chars_batch(r, height, width), num_parallel_calls=AUTOTUNE)


def batch_lines(records: tf.data.Dataset, height: int, batch_size: int, *,
                drop_remainder: bool, bucket_boundaries: tuple = ()) -> tf.data.Dataset:
    """Serialized "lines" records -> padded batches bucketed by width.

    Lines are parsed one by one (`parse_line`: their widths differ); a batch holds lines of
    one width bucket, padded with background (image) and the CTC blank (labels).
    """
    examples = records.map(lambda r: parse_line(r, height), num_parallel_calls=AUTOTUNE)
    boundaries = list(bucket_boundaries)
    return examples.bucket_by_sequence_length(
        element_length_func=lambda e: e["width"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padded_shapes={"image": [height, None, 1], "labels": [None], "label_length": [],
                       "width": []},
        padding_values={"image": 0.0, "labels": 0, "label_length": 0, "width": 0},
        drop_remainder=drop_remainder)


def keyed_batches(batches: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """`(batch, key)`: a stateless random key per batch, drawn from the (globally seeded)
    random stream in the batches' order.

    The draw is a sequential map of its own: a stateful random op inside a parallel map is
    called in whatever order the threads run, so batch i would get the key of draw j and the
    same seed would give other augmentations and mixup weights on every run (the Mirrored
    run with mixup then no longer matched one device). Not `enumerate`: a second source
    dataset in the pipeline would stop tf.distribute's FILE auto-shard from rewriting it.
    """
    def draw(batch):
        return batch, tf.random.uniform([2], 0, tf.int64.max, dtype=tf.int64, seed=seed)
    return batches.map(draw)


def augment_batches(batches: tf.data.Dataset, params: augment_lib.AugmentParams,
                    seed: int) -> tf.data.Dataset:
    """Every batch's images through `augment.augment_batch`, keyed by `keyed_batches`."""
    def augment_fn(batch, key):
        batch = dict(batch)
        batch["image"] = augment_lib.augment_batch(batch["image"], params, key)
        return batch
    return keyed_batches(batches, seed).map(augment_fn, num_parallel_calls=AUTOTUNE)


def mixup_batches(batches: tf.data.Dataset, alpha: float, seed: int) -> tf.data.Dataset:
    """mixup of character batches: each image blended with the next one of its batch.

    The records are shuffled before batching, so the neighbour is a random partner. Adds
    "mix_label" (the partner's label) and "mix_weight" (the weight of the image's own label,
    max(l, 1 - l) with l ~ Beta(alpha, alpha), so that its own label always dominates and the
    training accuracy still means something). Keyed by `keyed_batches`, folded so that the
    weights do not follow the augmentation's draws of the same seed.
    """
    def mix(batch, key):
        batch = dict(batch)
        keys = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(key, 1), 2)
        n = tf.shape(batch["image"])[0]
        first = tf.random.stateless_gamma([n], keys[0], alpha)
        second = tf.random.stateless_gamma([n], keys[1], alpha)
        weight = first / tf.maximum(first + second, 1e-12)
        weight = tf.maximum(weight, 1.0 - weight)
        image = batch["image"]
        w = tf.cast(weight, image.dtype)[:, None, None, None]
        batch["image"] = w * image + (1.0 - w) * tf.roll(image, 1, axis=0)
        batch["mix_label"] = tf.roll(batch["label"], 1, axis=0)
        batch["mix_weight"] = tf.cast(weight, tf.float32)
        return batch
    return keyed_batches(batches, seed).map(mix, num_parallel_calls=AUTOTUNE)


def raw_record_dataset(source: DataSource, split: str) -> tf.data.Dataset:
    """Every serialized record of a split, in file order: the benchmarks' baseline."""
    return read_records(source.files[split], compression=source.compression, training=False)
