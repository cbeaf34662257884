"""The tf.data input pipeline and the batch augmentation, on tiny preprocessed directories."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

tf = pytest.importorskip("tensorflow")

from beam_preprocess.contract import schema
from tests import tiny_data
from trainers.training import augment, input_pipeline


@pytest.fixture(scope="module")
def chars_dir(tmp_path_factory):
    return tiny_data.write_chars(tmp_path_factory.mktemp("chars"), num_classes=4, image_size=32,
                                 splits={"train": 40, "validation": 12}, num_shards=2)


@pytest.fixture(scope="module")
def lines_dir(tmp_path_factory):
    return tiny_data.write_lines(tmp_path_factory.mktemp("lines"), num_classes=5, height=32,
                                 splits={"train": 12, "validation": 6})


def _raw_records(source, split):
    out = []
    for record in input_pipeline.raw_record_dataset(source, split):
        parsed = tf.io.parse_single_example(record, schema.feature_spec(source.task))
        out.append(parsed)
    return out


def test_source_reads_metadata_and_shards(chars_dir):
    source = input_pipeline.open_preprocessed(chars_dir)
    assert source.task == "chars" and source.num_classes == 4
    assert source.image_shape == (32, 32, 1)
    assert source.counts == {"train": 40, "validation": 12}
    assert [os.path.basename(f) for f in source.files["train"]] == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]


def test_eval_batches_are_normalized_records_in_order_never_augmented(chars_dir):
    source = input_pipeline.open_preprocessed(chars_dir)
    plain = list(input_pipeline.make_dataset(source, "validation", batch_size=5, training=False))
    augmented = list(input_pipeline.make_dataset(
        source, "validation", batch_size=5, training=False, augment=augment.AugmentParams()))
    assert [x.shape[0] for x, _ in plain] == [5, 5, 2]  # the last partial batch is kept
    for (x1, y1), (x2, y2) in zip(plain, augmented):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    images = np.concatenate([x.numpy() for x, _ in plain])
    labels = np.concatenate([y.numpy() for _, y in plain])
    raw = _raw_records(source, "validation")
    expected = np.stack([1.0 - np.frombuffer(r["image"].numpy(), np.uint8).reshape(32, 32, 1)
                         / 255.0 for r in raw])
    np.testing.assert_allclose(images, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, [int(r["label"]) for r in raw])
    assert images.dtype == np.float32 and labels.dtype == np.int32


def test_only_one_pass_datasets_turn_tf_data_autotuning_off(chars_dir):
    """Ending an autotuned iterator can wait many seconds at 0 % CPU (`finite_pass_options`);
    Keras fit ends a validation iterator every epoch, the training one only once."""
    source = input_pipeline.open_preprocessed(chars_dir)
    validation = input_pipeline.make_dataset(source, "validation", batch_size=5, training=False,
                                             take_batches=2, cache=True)
    training = input_pipeline.make_dataset(source, "train", batch_size=5, training=True)
    assert validation.options().autotune.enabled is False
    assert training.options().autotune.enabled is not False
    _, policy = input_pipeline.source_records(source, "validation", training=False, shard=None,
                                              num_input_workers=1, seed=0)
    assert validation.options().experimental_distribute.auto_shard_policy == policy  # kept
    assert len(list(validation)) == 2 and len(list(validation)) == 2


def test_training_repeats_full_batches_and_augments(chars_dir):
    source = input_pipeline.open_preprocessed(chars_dir)
    params = augment.AugmentParams()
    ds = input_pipeline.make_dataset(source, "train", batch_size=16, training=True,
                                     augment=params, seed=3, shuffle_buffer=64)
    batches = list(ds.take(6))  # 96 > 40 examples: repeats, every batch full
    assert all(x.shape == (16, 32, 32, 1) and y.shape == (16,) for x, y in batches)
    images = np.concatenate([x.numpy() for x, _ in batches])
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Augmented images are not records: noise makes every background pixel non-zero somewhere.
    assert (images > 0).mean() > 0.3


def test_the_same_seed_gives_the_same_augmented_and_mixed_batches_on_every_build(tmp_path):
    # The per-batch random keys were drawn inside parallel maps, in thread order: about a
    # third of these batches differed between two builds, and the Mirrored run with mixup
    # stopped matching one device. Batches of 2 give the threads many chances to race. One
    # shard: training interleaves several shards in no fixed order, by design.
    source = input_pipeline.open_preprocessed(tiny_data.write_chars(
        tmp_path, num_classes=4, image_size=32, splits={"train": 40}, num_shards=1))

    def build(seed):
        tf.random.set_seed(0)
        ds = input_pipeline.make_dataset(source, "train", batch_size=2, training=True,
                                         augment=augment.AugmentParams(), mixup_alpha=0.4,
                                         seed=seed, shuffle_buffer=1)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(80)]

    first, second = build(5), build(5)
    for i, ((xa, ya), (xb, yb)) in enumerate(zip(first, second)):
        np.testing.assert_array_equal(xa, xb, err_msg=f"batch {i}")
        np.testing.assert_array_equal(ya, yb, err_msg=f"batch {i}")
    other = build(6)
    assert not np.array_equal(first[0][0], other[0][0])
    # mixup's weights are not the augmentation's draws of the same key
    assert len({float(y[0, 2]) for _, y in first}) > 40


def test_horovod_style_shards_are_disjoint_and_complete(chars_dir):
    source = input_pipeline.open_preprocessed(chars_dir)

    def sources_of(shard):
        records = input_pipeline.read_records(source.files["train"], training=False,
                                              shard=shard)
        return sorted(tf.io.parse_single_example(r, {"source": tf.io.FixedLenFeature(
            [], tf.string)})["source"].numpy() for r in records)

    everything = sources_of(None)
    for num_shards in (2, 3):  # 2: whole files per rank; 3 > 2 files: by record
        parts = [sources_of((num_shards, i)) for i in range(num_shards)]
        assert sorted(sum(parts, [])) == everything
        assert all(parts)


def test_curriculum_variable_filters_classes(chars_dir):
    source = input_pipeline.open_preprocessed(chars_dir)
    classes = tf.Variable(2, dtype=tf.int32)
    ds = input_pipeline.make_dataset(source, "train", batch_size=8, training=True,
                                     curriculum_classes=classes, shuffle_buffer=8)
    labels = np.concatenate([y.numpy() for _, y in ds.take(4)])
    assert set(labels) <= {0, 1}


def test_gzip_shards(tmp_path):
    directory = tiny_data.write_chars(tmp_path / "gz", num_classes=3, image_size=16,
                                      splits={"train": 6}, num_shards=1, compression="GZIP")
    source = input_pipeline.open_preprocessed(directory)
    assert source.files["train"][0].endswith(".tfrecord.gz")
    (x, y), = list(input_pipeline.make_dataset(source, "train", batch_size=6, training=False))
    assert x.shape == (6, 16, 16, 1) and sorted(y.numpy()) == [0, 0, 1, 1, 2, 2]


def test_lines_are_bucketed_padded_and_packed_for_ctc(lines_dir):
    source = input_pipeline.open_preprocessed(lines_dir)
    assert source.task == "lines" and source.image_width is None
    raw = {r["source"].numpy(): r for r in _raw_records(source, "validation")}
    widths = sorted(int(r["width"]) for r in raw.values())
    batches = list(input_pipeline.make_dataset(source, "validation", batch_size=3,
                                               training=False, bucket_boundaries=(96,)))
    assert sum(x.shape[0] for x, _ in batches) == 6
    seen_widths = []
    for images, packed in batches:
        images, packed = images.numpy(), packed.numpy()
        label_length, logit_length, labels = packed[:, 0], packed[:, 1], packed[:, 2:]
        batch_widths = logit_length * 4
        seen_widths += list(batch_widths)
        assert images.shape[2] == batch_widths.max()  # padded to the widest line
        for image, width, n, ids in zip(images, batch_widths, label_length, labels):
            assert not image[:, width:].any()  # padding is background
            assert (ids[:n] >= 1).all() and not ids[n:].any()  # ids 1..N, then blank padding
        # Bucketing: a batch never mixes lines on both sides of the boundary.
        assert (batch_widths < 96).all() or (batch_widths >= 96).all()
    assert sorted(seen_widths) == widths


def test_ctc_logit_lengths_are_every_crnn_presets_time_steps(lines_dir):
    # to_keras packs logit_length = width // models.CRNN_WIDTH_DOWNSAMPLE for the CTC loss; it
    # must be the number of time steps the real models produce for that (unpadded) width.
    import models
    source = input_pipeline.open_preprocessed(lines_dir)
    lines = [(x, int(packed[0, 1])) for x, packed in input_pipeline.make_dataset(
        source, "validation", batch_size=1, training=False)]
    for width in (4, 37, 64, 101, 130):  # and widths that are not multiples of 4
        batch = {"image": tf.zeros([1, 32, width, 1]), "labels": tf.ones([1, 1], tf.int32),
                 "label_length": tf.ones([1], tf.int32), "width": tf.constant([width])}
        image, packed = input_pipeline.to_keras(batch)
        lines.append((image, int(packed[0, 1])))
    presets = [name for name in models.available_models() if models.is_sequence_model(name)]
    assert {"crnn_tiny", "crnn"} <= set(presets)
    built = {name: models.build_model(name, num_classes=source.num_classes,
                                      input_shape=(32, None, 1)) for name in presets}
    for name, model in built.items():
        for image, logit_length in lines:
            steps = model.compute_output_shape(tuple(image.shape))[1]
            assert steps == logit_length, (name, image.shape[2], steps, logit_length)
    # And run one for real (one trace for every width: eager LSTMs take seconds per width).
    model = built["crnn_tiny"]
    run = tf.function(lambda x: model(x, training=False), autograph=False,
                      input_signature=[tf.TensorSpec([None, 32, None, 1], tf.float32)])
    for image, logit_length in lines:
        assert int(tf.shape(run(image))[1]) == logit_length, image.shape


def test_digits_without_download_and_npz(tmp_path):
    source = input_pipeline.open_digits("digits")
    assert source.image_shape == (28, 28, 1) and source.num_classes == 10
    assert source.counts["train"] + source.counts["validation"] == 1797
    (x, y), = list(input_pipeline.make_dataset(source, "validation", batch_size=8,
                                               training=False).take(1))
    assert x.shape == (8, 28, 28, 1) and set(y.numpy()) <= set(range(10))
    assert x.numpy()[:, 0, 0, 0].max() == 0.0  # background stays 0 (ink 1)

    ink = np.zeros((4, 28, 28), np.uint8)
    ink[:, 10:18, 12:14] = 255  # MNIST layout: ink high
    np.savez(tmp_path / "mnist.npz", x_train=ink, y_train=np.arange(4), x_test=ink[:2],
             y_test=np.arange(2))
    arrays = input_pipeline.load_digits_arrays(str(tmp_path / "mnist.npz"))
    assert arrays["train"][0][0, 0, 0] == 255 and arrays["train"][0][0, 12, 12] == 0
    with pytest.raises(FileNotFoundError, match="mnist.npz"):
        input_pipeline.load_digits_arrays(str(tmp_path / "missing.npz"))


# === Augmentation ===


def _batch():
    rng = np.random.default_rng(0)
    images = np.stack([1.0 - tiny_data.char_pattern(k, 32, rng, noise=0)[..., None] / 255.0
                       for k in range(8)]).astype(np.float32)
    return tf.constant(images)


def test_augmentation_is_seeded_bounded_and_changes_images():
    images = _batch()
    params = augment.AugmentParams()
    a = augment.augment_batch(images, params, tf.constant([1, 2], tf.int64)).numpy()
    b = augment.augment_batch(images, params, tf.constant([1, 2], tf.int64)).numpy()
    c = augment.augment_batch(images, params, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01
    assert a.shape == images.shape and a.min() >= 0.0 and a.max() <= 1.0
    assert np.abs(a - images.numpy()).mean() > 0.01


OFF = dict(rotation=0, scale_min=1, scale_max=1, shift=0, noise_std=0, brightness=0,
           elastic_alpha=0)


def test_each_transform_run_at_its_identity_setting_returns_its_input():
    # augment_batch skips a transform whose ranges are all zero, so call the transforms
    # themselves: the sampling grid, the bilinear resampling and the clipping all run.
    images = _batch()
    off = augment.AugmentParams(**OFF)
    seed = tf.constant([5, 6], tf.int64)
    for transform in (augment.geometric_transform, augment.photometric_transform,
                      augment.cutout_transform, augment.augment_batch):
        out = transform(images, off, seed).numpy()
        np.testing.assert_allclose(out, images.numpy(), atol=1e-6, err_msg=transform.__name__)


@pytest.mark.parametrize("field, value", [("rotation", 1e-4), ("scale_min", 1 - 1e-6),
                                          ("scale_max", 1 + 1e-6), ("shift", 1e-6),
                                          ("elastic_alpha", 1e-5), ("noise_std", 1e-6),
                                          ("brightness", 1e-6)])
def test_each_augmentation_at_a_vanishing_range_is_the_identity(field, value):
    # A tiny non-zero range switches the effect on (its code path runs, elastic and noise
    # included) but moves no pixel by more than a hair: the output is the input.
    images = _batch()
    params = augment.AugmentParams(**{**OFF, field: value})
    assert params.geometric or params.brightness or params.noise_std
    out = augment.augment_batch(images, params, tf.constant([5, 6], tf.int64)).numpy()
    np.testing.assert_allclose(out, images.numpy(), atol=1e-4)


@pytest.mark.parametrize("field, value", [("rotation", 15.0), ("shift", 0.1),
                                          ("elastic_alpha", 2.0), ("noise_std", 0.05),
                                          ("brightness", 0.2), ("cutout", 0.3)])
def test_each_augmentation_switches_on_alone(field, value):
    images = _batch()
    params = augment.AugmentParams(**{**OFF, field: value})
    out = augment.augment_batch(images, params, tf.constant([5, 6], tf.int64)).numpy()
    assert np.abs(out - images.numpy()).mean() > 1e-3
    if field in ("rotation", "shift", "elastic_alpha"):
        # Geometry moves ink but keeps about as much of it.
        assert abs(out.sum() / images.numpy().sum() - 1.0) < 0.35


def test_cutout_erases_one_square_of_the_given_side_per_image_and_adds_nothing():
    images = tf.ones([16, 40, 40, 1])
    params = augment.AugmentParams(**OFF, cutout=0.25)
    seed = tf.constant([3, 4], tf.int64)
    out = augment.augment_batch(images, params, seed).numpy()
    np.testing.assert_array_equal(out, augment.augment_batch(images, params, seed).numpy())
    assert set(np.unique(out)) <= {0.0, 1.0}
    erased = out[..., 0] == 0.0
    for mask in erased:
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert len(rows) > 0, "every image loses a square (its centre is inside the image)"
        # One axis-aligned box, at most 10 x 10 pixels, cut only by the image border.
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert mask.sum() == len(rows) * len(cols) and len(rows) <= 10 and len(cols) <= 10
        assert len(rows) == 10 or rows[0] == 0 or rows[-1] == 39
    centres = [np.argwhere(m).mean(0) for m in erased]
    assert np.ptp(np.array(centres), axis=0).min() > 10, "centres are spread over the image"


# === Exactly the listed shards; damaged shards named ===


def _count(dataset):
    return sum(int(tf.shape(x)[0]) for x, _ in dataset)


def test_stale_extra_shards_are_never_read(tmp_path, caplog):
    data_dir = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32,
                                     splits={"train": 20, "validation": 8}, num_shards=2)
    # An earlier run into the same directory: 3 shards, and a compressed copy.
    listed = sorted(str(p) for p in (tmp_path / "chars").glob("train-*"))
    for stale in ("train-00000-of-00003.tfrecord", "train-00002-of-00003.tfrecord",
                  "train-00000-of-00002.tfrecord.gz"):
        (tmp_path / "chars" / stale).write_bytes(open(listed[0], "rb").read())
    with caplog.at_level("WARNING"):
        source = input_pipeline.open_preprocessed(data_dir)
    assert source.files["train"] == listed
    assert "ignoring 3 shard file(s)" in caplog.text and "train-00000-of-00003" in caplog.text
    dataset = input_pipeline.make_dataset(source, "train", batch_size=8, training=False)
    assert _count(dataset) == 20

    from beam_preprocess.contract import metadata
    from trainers.serving import evaluation
    batches = evaluation.read_split(metadata.load(data_dir), "train", batch_size=8)
    assert sum(len(b["label"]) for b in batches) == 20


def test_missing_listed_shard_is_named(tmp_path):
    data_dir = tiny_data.write_chars(tmp_path / "chars", splits={"train": 8}, num_shards=2)
    os.remove(os.path.join(data_dir, "train-00001-of-00002.tfrecord"))
    with pytest.raises(FileNotFoundError, match=r"train-00001-of-00002\.tfrecord: shard"):
        input_pipeline.open_preprocessed(data_dir)


@pytest.fixture
def truncated_dir(tmp_path):
    data_dir = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32,
                                     splits={"train": 24, "validation": 8}, num_shards=2)
    damaged = os.path.join(data_dir, "train-00001-of-00002.tfrecord")
    data = open(damaged, "rb").read()
    with open(damaged, "wb") as f:
        f.write(data[:-50])  # the last record cut short
    return data_dir, damaged


def test_truncated_shard_is_named_in_training_and_evaluation(truncated_dir):
    data_dir, damaged = truncated_dir
    source = input_pipeline.open_preprocessed(data_dir)
    dataset = input_pipeline.make_dataset(source, "train", batch_size=8, training=False)
    with pytest.raises(input_pipeline.DamagedShardError) as raised:
        with source.naming_damaged_shards():
            _count(dataset)
    message = str(raised.value)
    assert message.startswith(damaged + ": damaged TFRecord shard after record 11: ")
    assert "truncated record" in message and "\n" not in message and "{{" not in message

    from beam_preprocess.contract import metadata
    from trainers.serving import evaluation
    with pytest.raises(input_pipeline.DamagedShardError, match=damaged):
        list(evaluation.read_split(metadata.load(data_dir), "train", batch_size=8))


def test_truncated_shard_stops_training_with_its_name(truncated_dir, tmp_path):
    from trainers.training import configs, train
    data_dir, damaged = truncated_dir
    config = configs.override(configs.get_config("smoke"),
                              ["epochs=1", "steps_per_epoch=2", "eval_steps=1",
                               "precision=float32"])
    with pytest.raises(input_pipeline.DamagedShardError, match=damaged):
        train.train_and_evaluate(config, str(tmp_path / "run"), data_dir)
