"""The distribution switch: detection, MirroredStrategy over 2 logical CPU devices against one
device, and Horovod with 2 ranks over Gloo (identical weights; diverging without all-reduce).
The Mirrored, Horovod and MultiWorker runs train with mixup, as the casia-sample recipe does."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from tests import tiny_data
from trainers.training import strategy

BIN = os.path.dirname(sys.executable)
HCCR_TRAIN = os.path.join(BIN, "hccr-train")


def _run(argv, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                            check=False)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.json")) as f:
        return json.load(f)


def test_detect(monkeypatch):
    for name in ("TF_CONFIG", *strategy.HOROVOD_RANK_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert strategy.detect() in ("one_device", "mirrored")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert strategy.detect() == "multi_worker"
    monkeypatch.setenv("HOROVOD_RANK", "1")
    assert strategy.detect() == "horovod"


def test_one_device_needs_no_distribution_code():
    dist = strategy.Distribution("one_device", strategy.tf.distribute.get_strategy())
    assert dist.dataset_batch_size(32) == 32 and dist.input_shard is None
    assert dist.optimizer_class(keras.optimizers.Adam) is keras.optimizers.Adam
    assert dist.callbacks() == []
    hvd = strategy.Distribution("horovod", strategy.tf.distribute.get_strategy(),
                                num_replicas=4, num_workers=4, worker_index=3, is_chief=False)
    assert hvd.dataset_batch_size(32) == 32 and hvd.input_shard == (4, 3)
    mirrored = strategy.Distribution("mirrored", strategy.tf.distribute.get_strategy(),
                                     num_replicas=2)
    assert mirrored.dataset_batch_size(32) == 64  # the pipeline yields global batches


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_matches_one_device(tmp_path):
    # One shard and no shuffling: both runs see the same batches in the same order. SGD, not
    # Adam: Adam's normalization turns float round-off in near-zero gradients into full steps.
    # With mixup (the casia-sample recipe's): the global batch is blended before the strategy
    # splits it, so its soft targets must reach each replica with its own images.
    data = tiny_data.write_chars(tmp_path / "data", num_classes=4, image_size=28, num_shards=1,
                                 splits={"train": 64})
    common = ["--config", "smoke", "--data", data, "--set", "model=lenet",
              "--precision", "float32", "--set", "augment=false", "--set", "lr_scaling=none",
              "--set", "epochs=1", "--set", "steps_per_epoch=3", "--set", "eval_split=",
              "--set", "optimizer=sgd", "--set", "learning_rate=0.05",
              "--set", "shuffle_buffer=1", "--set", "mixup_alpha=0.4"]
    one = str(tmp_path / "one")
    mirrored = str(tmp_path / "mirrored")
    _run([HCCR_TRAIN, *common, "--workdir", one, "--strategy", "one_device",
          "--set", "per_replica_batch_size=16"])
    _run([HCCR_TRAIN, *common, "--workdir", mirrored, "--strategy", "mirrored",
          "--set", "num_cpu_devices=2", "--set", "per_replica_batch_size=8"])
    a, b = _metrics(one), _metrics(mirrored)
    assert (a["strategy"], a["num_replicas"]) == ("one_device", 1)
    assert (b["strategy"], b["num_replicas"]) == ("mirrored", 2)
    assert a["global_batch_size"] == b["global_batch_size"] == 16
    assert b["weights_in_sync"] and len(b["replica_weight_digests"]) == 2
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    wa = keras.models.load_model(os.path.join(one, "final.keras"), compile=False).get_weights()
    wb = keras.models.load_model(os.path.join(mirrored, "final.keras"),
                                 compile=False).get_weights()
    assert len(wa) == len(wb) == 8
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.slow
def test_mirrored_batchnorm_statistics_agree_on_every_replica(tmp_path):
    """hccr_resnet_tiny (BatchNorm) on 2 logical CPU devices: synchronized BatchNorm keeps the
    moving statistics identical on both replicas; the control without it shows they drift
    apart while the trainable weights still agree, and the log names the variables. (Two
    processes: a second MirroredStrategy in one process aborts its collectives.)"""
    data = tiny_data.write_chars(tmp_path / "data", num_classes=4, image_size=32, num_shards=1,
                                 splits={"train": 64})
    common = [HCCR_TRAIN, "--config", "smoke", "--data", data, "--precision", "float32",
              "--strategy", "mirrored", "--set", "num_cpu_devices=2", "--set", "epochs=1",
              "--set", "steps_per_epoch=2", "--set", "eval_split=", "--set", "eval_steps=0",
              "--set", "per_replica_batch_size=8"]
    synced = str(tmp_path / "synced")
    run = _run(common + ["--workdir", synced])
    m = _metrics(synced)
    assert m["num_replicas"] == 2 and m["weights_in_sync"], m
    assert m["trainable_in_sync"] and m["statistics_in_sync"] and m["replicas_differ_in"] == []
    assert "differ" not in run.stderr

    control = str(tmp_path / "control")
    run = _run(common + ["--workdir", control, "--set", "sync_batchnorm=false"])
    c = _metrics(control)
    assert not c["weights_in_sync"] and c["trainable_in_sync"] and not c["statistics_in_sync"]
    assert c["replicas_differ_in"] and all("moving_" in p for p in c["replicas_differ_in"]), c
    assert "the replicas' statistics (non-trainable) differ: " in run.stderr
    assert c["replicas_differ_in"][0] in run.stderr


def _horovod_available():
    horovodrun = os.path.join(BIN, "horovodrun")
    if not os.path.exists(horovodrun):
        return None
    try:
        import horovod.tensorflow as hvd
    except ImportError:
        return None
    return horovodrun if hvd.gloo_built() else None


@pytest.mark.slow
def test_horovod_two_ranks_train_to_identical_weights(tmp_path):
    horovodrun = _horovod_available()
    if horovodrun is None:
        pytest.skip("Horovod with Gloo is not installed (HCCR_SKIP_HOROVOD?)")
    data = tiny_data.write_chars(tmp_path / "data", num_classes=4, image_size=32, num_shards=2,
                                 splits={"train": 64, "validation": 16})

    def launch(workdir, *extra):
        return _run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", HCCR_TRAIN,
                     "--config", "smoke", "--data", data, "--workdir", workdir,
                     "--strategy", "horovod", "--precision", "float32", "--set", "epochs=1",
                     "--set", "mixup_alpha=0.4", *extra])  # mixup: the recipe's ingredient

    synced = str(tmp_path / "allreduce")
    launch(synced)
    m = _metrics(synced)
    assert m["strategy"] == "horovod" and m["num_replicas"] == 2
    assert m["global_batch_size"] == 32
    assert len(m["replica_weight_digests"]) == 2 and m["weights_in_sync"], m

    control = str(tmp_path / "control")
    launch(control, "--set", "horovod_allreduce=false")
    c = _metrics(control)
    assert len(set(c["replica_weight_digests"])) == 2 and not c["weights_in_sync"], c


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_processes_on_localhost(tmp_path):
    data = tiny_data.write_chars(tmp_path / "data", num_classes=4, image_size=32, num_shards=2,
                                 splits={"train": 64, "validation": 16})
    workdir = str(tmp_path / "run")
    results = _run_two_workers([HCCR_TRAIN], data, workdir)
    for r in results:
        assert (r["strategy"], r["num_replicas"], r["global_batch_size"]) == (
            "multi_worker", 2, 32)
        assert r["step"] == r["optimizer_iterations"] == 4
        # One digest per replica of every worker (an all-gather), not only this worker's.
        assert len(r["replica_weight_digests"]) == 2 and r["weights_in_sync"], r
    assert results[0]["replica_weight_digests"] == results[1]["replica_weight_digests"]
    # Synchronous training: both workers report the same global metrics.
    assert results[0]["loss"] == pytest.approx(results[1]["loss"])
    assert results[0]["val_loss"] == pytest.approx(results[1]["val_loss"])
    assert _metrics(workdir)["strategy"] == "multi_worker"  # the chief wrote it

    # Control: worker 1 shifts one weight after training; both workers see the difference.
    control = _run_two_workers([sys.executable, "-m", "tests.perturbed_train"], data,
                               str(tmp_path / "control"))
    for r in control:
        assert len(set(r["replica_weight_digests"])) == 2 and not r["weights_in_sync"], r
        assert not r["trainable_in_sync"] and r["statistics_in_sync"], r
        assert len(r["replicas_differ_in"]) == 1, r["replicas_differ_in"]


def _run_two_workers(command, data, workdir):
    """hccr-train (`command`) as two MultiWorker processes on localhost; their metrics."""
    from tests.conftest import REPO
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config),
                   PYTHONPATH=str(REPO))
        procs.append(subprocess.Popen(
            [*command, "--config", "smoke", "--data", data, "--workdir", workdir,
             "--strategy", "multi_worker", "--precision", "float32", "--set", "epochs=1",
             "--set", "mixup_alpha=0.4"],  # mixup: the casia-sample recipe's ingredient
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
