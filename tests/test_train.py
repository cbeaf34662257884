"""The real training function on tiny shards: one step, NaN stop, mixed precision, CRNN + CTC,
curriculum, resumption after SIGKILL, and shards read from s3:// (a local S3 server)."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from tests import tiny_data
from trainers.training import configs, train

BIN = os.path.dirname(sys.executable)
HCCR_TRAIN = os.path.join(BIN, "hccr-train")


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def chars_dir(tmp_path_factory):
    return tiny_data.write_chars(tmp_path_factory.mktemp("chars"), num_classes=4, image_size=32,
                                 splits={"train": 64, "validation": 16})


def _config(name="smoke", **changes):
    return configs.override(configs.get_config(name),
                            [f"{k}={v}" for k, v in changes.items()])


def _history(workdir):
    with open(os.path.join(workdir, "history.csv")) as f:
        return list(csv.DictReader(f))


def _run_cli(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **kwargs.pop("env", {}))
    return subprocess.run([HCCR_TRAIN, *args], capture_output=True, text=True, env=env,
                          **kwargs)


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_one_step_of_the_real_training_function(chars_dir, tmp_path):
    config = _config(epochs=1, steps_per_epoch=1, eval_steps=1, precision="float32")
    workdir = str(tmp_path / "run")
    metrics = train.train_and_evaluate(config, workdir, chars_dir)
    assert metrics["step"] == 1 and metrics["optimizer_iterations"] == 1
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["val_loss"])
    assert metrics["global_batch_size"] == 16 and metrics["strategy"] == "one_device"
    for name in ("config.json", "run_info.json", "charset.txt", "model_info.json", "best.keras",
                 "final.keras", "history.csv", "metrics.json", "checkpoints/checkpoint.json",
                 "curves.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard")), "TensorBoard is on by default"
    assert configs.load(os.path.join(workdir, "config.json")) == config
    model = keras.models.load_model(os.path.join(workdir, "final.keras"), compile=False)
    assert model.output_shape == (None, 4)
    # A rerun of a finished run resumes at its end and trains nothing.
    again = train.train_and_evaluate(config, workdir, chars_dir)
    assert again["resumed_from_step"] == 1 and again["step"] == 1


@pytest.mark.parametrize("start_step, epochs, fits", [
    (0, 2, [(0, 2, 6)]),
    (4, 2, [(0, 1, 2), (1, 2, 6)]),  # the rest of the interrupted epoch, then whole epochs
    (4, 1, [(0, 1, 2)]),
    (6, 2, [(1, 2, 6)]),
    (12, 2, []),  # finished: nothing to train
])
def test_fit_segments_resume_at_the_checkpoints_step(start_step, epochs, fits):
    assert train.fit_segments(start_step, 6, epochs) == fits


def test_nan_loss_stops_the_run_naming_the_step(chars_dir, tmp_path):
    config = _config(model="lenet", optimizer="sgd", learning_rate=1e12, momentum=0.0,
                     epochs=1, steps_per_epoch=20, precision="float32", augment=False)
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step \d+ \(epoch 1"):
        train.train_and_evaluate(config, str(tmp_path / "nan"), chars_dir)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_run(chars_dir, tmp_path, policy):
    workdir = str(tmp_path / policy)
    metrics = train.train_and_evaluate(
        _config(epochs=1, steps_per_epoch=3, eval_steps=1, precision=policy), workdir,
        chars_dir)
    assert metrics["precision"] == policy
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["val_loss"])
    model = keras.models.load_model(os.path.join(workdir, "final.keras"), compile=False)
    assert model.dtype_policy.name == policy
    assert model(np.zeros((1, 32, 32, 1), np.float32)).dtype == "float32"  # float32 logits
    if policy == "mixed_float16":
        # Loss scaling may skip an overflowing step, never more steps than were run.
        assert 1 <= metrics["optimizer_iterations"] <= metrics["step"] == 3


def test_deterministic_runs_of_one_seed_end_with_identical_weights(tmp_path):
    """`deterministic=true`: two runs of one seed end weight for weight alike, with what makes
    runs differ by default (two shards interleaved in no fixed order, augmentation, mixup,
    Adam). Subprocesses: op determinism is process-wide."""
    data = tiny_data.write_chars(tmp_path / "data", num_classes=4, image_size=32, num_shards=2,
                                 splits={"train": 64})
    common = ["--config", "smoke", "--data", data, "--precision", "float32",
              "--set", "epochs=1", "--set", "steps_per_epoch=8", "--set", "eval_split=",
              "--set", "per_replica_batch_size=8", "--set", "mixup_alpha=0.4",
              "--set", "seed=3", "--set", "deterministic=true"]
    weights = []
    for name in ("a", "b"):
        workdir = str(tmp_path / name)
        result = _run_cli([*common, "--workdir", workdir], timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        model = keras.models.load_model(os.path.join(workdir, "final.keras"), compile=False)
        weights.append(model.get_weights())
    assert len(weights[0]) == len(weights[1]) > 10
    differ = [i for i, (x, y) in enumerate(zip(*weights)) if not np.array_equal(x, y)]
    assert not differ, f"two runs of one seed differ in weights {differ}"


def test_crnn_ctc_loss_falls(tmp_path):
    lines = tiny_data.write_lines(tmp_path / "lines", num_classes=5, height=32,
                                  splits={"train": 48, "validation": 8})
    workdir = str(tmp_path / "crnn")
    metrics = train.train_and_evaluate(
        _config("crnn_smoke", epochs=3, steps_per_epoch=6, precision="float32"), workdir,
        lines)
    losses = [float(row["loss"]) for row in _history(workdir)]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
    assert np.isfinite(metrics["val_loss"])


def test_curriculum_grows_the_classes(chars_dir, tmp_path):
    workdir = str(tmp_path / "curriculum")
    train.train_and_evaluate(
        _config(model="lenet", epochs=3, steps_per_epoch=2, eval_steps=1, precision="float32",
                curriculum_start_fraction=0.5, curriculum_epochs=2, optimizer="nadam",
                reduce_lr_on_plateau=True, early_stopping=True, label_smoothing=0.1,
                clipnorm=1.0, l2=1e-4, dropout=0.1, warmup_epochs=1),
        workdir, chars_dir)
    rows = _history(workdir)
    assert [int(float(r["curriculum_classes"])) for r in rows] == [2, 3, 4]
    # Linear warm-up over the first epoch (2 steps), then the peak rate.
    assert float(rows[0]["learning_rate"]) == pytest.approx(1e-3)


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_the_same_step_count(chars_dir, tmp_path):
    args = ["--config", "smoke", "--data", chars_dir, "--set", "epochs=3",
            "--set", "steps_per_epoch=10", "--set", "checkpoint_every_steps=3",
            "--set", "precision=float32"]
    unbroken = _run_cli(args + ["--workdir", str(tmp_path / "unbroken")], timeout=300)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]

    workdir = str(tmp_path / "killed")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([HCCR_TRAIN, *args, "--workdir", workdir], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    killed = False
    for line in proc.stderr:
        if "checkpoint at step 12 " in line:  # epoch 2, batch 2 of 10
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.wait(timeout=60)
    assert killed and proc.returncode == -signal.SIGKILL
    with open(os.path.join(workdir, "checkpoints", "checkpoint.json")) as f:
        state = json.load(f)
    assert 12 <= state["step"] < 20 and state["epoch"] == 1  # mid-epoch 2

    resumed = _run_cli(args + ["--workdir", workdir], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {state['step']}" in resumed.stderr
    a, b = _last_json(unbroken.stdout), _last_json(resumed.stdout)
    assert a["optimizer_iterations"] == b["optimizer_iterations"] == 30
    assert a["step"] == b["step"] == 30 and b["resumed_from_step"] == state["step"]
    assert [r["epoch"] for r in _history(workdir)] == ["0", "1", "2"]


@pytest.fixture
def s3_server():
    """A moto S3 server on loopback; yields its endpoint URL."""
    pytest.importorskip("boto3")
    server_bin = os.path.join(BIN, "moto_server")
    if not os.path.exists(server_bin):
        pytest.skip("moto_server not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([server_bin, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_training_reads_shards_from_s3(chars_dir, s3_server):
    import boto3
    pytest.importorskip("tensorflow_io")
    creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server, **creds)
    client.create_bucket(Bucket="hccr")
    for name in sorted(os.listdir(chars_dir)):
        client.upload_file(os.path.join(chars_dir, name), "hccr", f"chars/{name}")
    env = dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", S3_ENDPOINT=s3_server, S3_USE_HTTPS="0",
               S3_VERIFY_SSL="0")
    result = _run_cli(["--config", "smoke", "--data", "s3://hccr/chars", "--workdir",
                       "s3://hccr/run", "--set", "epochs=1", "--set", "precision=float32"],
                      env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _last_json(result.stdout)
    assert metrics["step"] == 4 and np.isfinite(metrics["val_loss"])
    written = {o["Key"] for o in client.list_objects_v2(Bucket="hccr", Prefix="run/")["Contents"]}
    assert {"run/config.json", "run/metrics.json", "run/history.csv", "run/final.keras",
            "run/checkpoints/checkpoint.json"} <= written
