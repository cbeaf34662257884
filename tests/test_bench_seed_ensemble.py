"""Tests for bench/bench_seed_ensemble.py: the per-image bookkeeping of several models, and
the script end to end on two tiny trained models."""
import importlib.util
import json
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "bench_seed_ensemble.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_seed_ensemble", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_counts_shared_and_seed_errors_and_the_ensemble_fixes_seed_errors():
    labels = np.array([0, 1, 2, 0])
    # Model a misses image 1, model b misses image 2; both miss image 3 (say 1 instead of 0).
    a = np.array([[.9, .05, .05], [.6, .3, .1], [.1, .1, .8], [.2, .7, .1]])
    b = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .5, .4], [.3, .6, .1]])
    result = _bench().score([a, b], labels)
    assert result["images"] == 4
    assert result["top1"] == [0.5, 0.5]
    assert result["wrong_in_every_model"] == 1
    assert result["wrong_in_some_model"] == 3
    # Mean softmax: image 1 -> [.35, .55, .1] right, image 2 -> [.1, .3, .6] right.
    assert result["ensemble_top1"] == 0.75


def test_script_scores_two_models_on_a_preprocessed_split(tmp_path):
    import keras

    import models
    from tests import tiny_data
    data = tiny_data.write_chars(tmp_path / "data", num_classes=4, image_size=32)
    paths = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = models.build_model("hccr_resnet_tiny", num_classes=4, input_shape=(32, 32, 1))
        paths.append(str(tmp_path / f"m{seed}.keras"))
        model.save(paths[-1])
    out = tmp_path / "result.json"
    assert _bench().main(["--data", data, "--split", "train", "--out", str(out), *paths]) == 0
    result = json.loads(out.read_text())
    assert result["images"] > 0 and len(result["top1"]) == 2
    assert result["wrong_in_every_model"] <= result["wrong_in_some_model"] <= result["images"]
