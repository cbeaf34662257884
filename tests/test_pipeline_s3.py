"""The job against S3, as a user with a bucket runs it: GNT inputs read from and shards written to
`s3://` on a local S3-compatible server (moto's server mode, on 127.0.0.1, stopped at the end).
"""
import json
import os
import subprocess
import sys
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from beam_preprocess.contract import gnt, schema
from beam_preprocess.contract.tfrecords import iter_records  # noqa: E402
from beam_preprocess.job import pipeline

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "hwdb"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
               "region_name": "us-east-1"}


@pytest.fixture
def s3_server():
    """A moto S3 server on a free loopback port; yields (endpoint URL, boto3 client)."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"

    def reset():  # moto keeps its buckets in process-wide state: start and end empty
        urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"),
                               timeout=10).close()

    try:
        reset()
        client = boto3.client("s3", endpoint_url=url, **CREDENTIALS)
        client.create_bucket(Bucket=BUCKET)
        yield url, client
    finally:
        reset()
        server.stop()


def _upload_writers(client, tmp_path):
    rng = np.random.default_rng(0)
    for writer in ("1001", "1002", "1241"):
        samples = []
        for char in "啊阿埃宀":  # 宀 is outside GB2312 level 1: a reject
            image = np.full((30, 30), 255, np.uint8)
            image[5:25, int(rng.integers(3, 10)):int(rng.integers(15, 27))] = 0
            samples.append((char, image))
        path = tmp_path / f"{writer}-c.gnt"
        gnt.write_gnt(str(path), samples)
        client.upload_file(str(path), BUCKET, f"in/{writer}-c.gnt")
    client.put_object(Bucket=BUCKET, Key="in/README.txt", Body=b"not a gnt")


@pytest.mark.slow
def test_job_reads_and_writes_s3(s3_server, tmp_path):
    url, client = s3_server
    _upload_writers(client, tmp_path)
    s3_options = ["--s3_endpoint_url", url, "--s3_access_key_id", "testing",
                  "--s3_secret_access_key", "testing", "--s3_region_name", "us-east-1"]
    report = pipeline.run(["--input", f"s3://{BUCKET}/in/*.gnt", "--output",
                           f"s3://{BUCKET}/out", "--verify", *s3_options])
    assert report.ok, report.summary()
    assert report.metadata["counts"] == {"read": 12, "written": 9, "rejected": 3}
    assert "<redacted>" in report.metadata["command"]
    assert "testing" not in report.metadata["command"].split("--s3_secret_access_key")[1][:20]

    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET,
                                                            Prefix="out/")["Contents"])
    assert keys == ["out/charset.txt", "out/metadata.json",
                    "out/rejects/rejects-test-00000-of-00001.jsonl",
                    "out/rejects/rejects-train-00000-of-00002.jsonl",
                    "out/rejects/rejects-train-00001-of-00002.jsonl",
                    "out/test-00000-of-00001.tfrecord",
                    "out/train-00000-of-00002.tfrecord", "out/train-00001-of-00002.tfrecord"]
    md = json.loads(client.get_object(Bucket=BUCKET, Key="out/metadata.json")["Body"].read())
    assert {s: v["num_examples"] for s, v in md["splits"].items()} == {"train": 6, "test": 3}
    rejects = client.get_object(Bucket=BUCKET, Key="out/rejects/rejects-test-00000-of-00001.jsonl")
    row = json.loads(rejects["Body"].read().decode("utf-8"))
    assert row["file"] == f"s3://{BUCKET}/in/1241-c.gnt" and row["reason"] == "out_of_charset"

    # Same bytes as the same job on local files: shards do not depend on the filesystem.
    local = tmp_path / "local-out"
    local_report = pipeline.run(["--input", str(tmp_path / "*.gnt"), "--output", str(local)])
    assert local_report.ok
    for name in ("train-00000-of-00002.tfrecord", "test-00000-of-00001.tfrecord"):
        body = client.get_object(Bucket=BUCKET, Key=f"out/{name}")["Body"].read()
        assert body == (local / name).read_bytes()
    import io
    assert len(list(iter_records(io.BytesIO(body)))) == 3

    # A non-GNT object under the input glob is a clear error, as locally.
    with pytest.raises(pipeline.InputError, match="not a CASIA file"):
        pipeline.run(["--input", f"s3://{BUCKET}/in/*", "--output", f"s3://{BUCKET}/out2",
                      *s3_options])
    with pytest.raises(pipeline.InputError, match="matches no file"):
        pipeline.run(["--input", f"s3://{BUCKET}/nothing/*.gnt", "--output",
                      f"s3://{BUCKET}/out3", *s3_options])


TF_READER = """
import sys
import tensorflow as tf
import tensorflow_io  # registers s3://
from beam_preprocess.contract import schema
files = sorted(tf.io.gfile.glob("s3://hwdb/out/" + schema.shard_pattern("train")))
ds = tf.data.TFRecordDataset(files).map(
    lambda r: tf.io.parse_single_example(r, schema.feature_spec("chars")))
labels = sorted(int(ex["label"]) for ex in ds)
print("RESULT", len(files), labels, flush=True)
"""


@pytest.mark.slow
def test_shards_on_s3_read_back_with_tf_data(s3_server, tmp_path):
    """tf.data reads the shards straight from s3:// (tensorflow-io); the charset is built from the
    inputs on S3 (--charset data). tf.data runs in a subprocess: after any s3 access that
    process aborts at exit (tensorflow/io#2039), so its output is checked, not its exit status.
    """
    pytest.importorskip("tensorflow_io")
    url, client = s3_server
    _upload_writers(client, tmp_path)
    report = pipeline.run(["--input", f"s3://{BUCKET}/in/*.gnt", "--output",
                           f"s3://{BUCKET}/out", "--s3_endpoint_url", url,
                           "--s3_access_key_id", "testing", "--s3_secret_access_key", "testing",
                           "--s3_region_name", "us-east-1", "--charset", "data"])
    assert report.ok, report.summary()
    assert report.metadata["num_classes"] == 4 and report.metadata["counts"]["rejected"] == 0
    env = dict(os.environ, S3_ENDPOINT=url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", S3_USE_HTTPS="0",
               S3_VERIFY_SSL="0", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", TF_READER], env=env, capture_output=True,
                          text=True, timeout=180)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert result, proc.stderr[-3000:]
    from beam_preprocess.contract.charset import Charset
    data = Charset.from_data("啊阿埃宀")  # --charset data: 宀 is a class, not a reject
    expected = sorted([data.index(c) for c in "啊阿埃宀"] * 2)
    assert result[0] == f"RESULT 2 {expected}"
    assert schema.shard_pattern("train") == "train-*-of-*.tfrecord*"
