import numpy as np
import pytest

from beam_preprocess.contract import schema


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf
    return tf


def test_char_example_parses_with_tensorflow(tf):
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    record = schema.char_example(image=image.tobytes(), height=3, width=4, label=3754, char="座",
                                 writer="1001", orig_height=87, orig_width=65,
                                 source="1001-c.gnt:123456")
    parsed = tf.io.parse_single_example(record, schema.feature_spec("chars"))
    assert parsed["label"].numpy() == 3754
    assert parsed["char"].numpy().decode() == "座"
    decoded = tf.reshape(tf.io.decode_raw(parsed["image"], tf.uint8), (3, 4)).numpy()
    np.testing.assert_array_equal(decoded, image)
    assert (parsed["orig_height"].numpy(), parsed["orig_width"].numpy()) == (87, 65)
    # The hand-written encoder is valid protobuf: TF's own message type round-trips it.
    feature = tf.train.Example.FromString(record).features.feature
    assert feature["writer"].bytes_list.value == [b"1001"]


def test_line_example_and_large_and_negative_ints(tf):
    record = schema.line_example(image=b"\xff" * 6, height=2, width=3, labels=[0, 127, 128, 300000],
                                 text="中a1", writer="w", orig_height=2, orig_width=3, source="s")
    parsed = tf.io.parse_single_example(record, schema.feature_spec("lines"))
    assert tf.sparse.to_dense(parsed["labels"]).numpy().tolist() == [0, 127, 128, 300000]
    floats = schema.encode_example({"f": [0.5, -2.0], "n": -5})
    example = tf.train.Example.FromString(floats)
    assert list(example.features.feature["f"].float_list.value) == [0.5, -2.0]
    assert list(example.features.feature["n"].int64_list.value) == [-5]


def test_fast_char_encoder_is_byte_identical_to_the_reference():
    rng = np.random.default_rng(0)
    for i in range(200):
        kw = dict(image=rng.integers(0, 256, int(rng.integers(0, 5000)), np.uint8).tobytes(),
                  height=int(rng.integers(1, 300)), width=int(rng.integers(1, 300)),
                  label=int(rng.integers(0, 1 << 20)) if i % 7 else -1,
                  char=chr(int(rng.integers(0x4E00, 0x9FA5))),
                  writer="w" * int(rng.integers(0, 200)),
                  orig_height=int(rng.integers(0, 70000)), orig_width=int(rng.integers(0, 127)),
                  source="x/" * int(rng.integers(0, 100)) + f"f:{int(rng.integers(0, 1 << 40))}")
        assert schema.char_example(**kw) == schema.reference_char_example(**kw)


def test_encoding_is_deterministic():
    a = schema.encode_example({"b": 1, "a": b"x"})
    b = schema.encode_example({"a": b"x", "b": 1})
    assert a == b


def test_unknown_task():
    with pytest.raises(ValueError, match="task must be one of"):
        schema.feature_spec("pages")
