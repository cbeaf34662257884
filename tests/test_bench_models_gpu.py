"""Tests for bench/bench_models_gpu.py: it carries to a machine without TensorFlow, measures on
the TensorFlow backend here, and reports failed measurements instead of dropping them."""
import ast
import glob
import importlib.util
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "bench_models_gpu.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_models_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _imported_modules(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_carries_without_tensorflow_or_the_project():
    """Only the script and models/ travel to the GPU machine, with keras and jax."""
    forbidden = ("trainers", "beam_preprocess", "launch")
    for path in [SCRIPT, *glob.glob(os.path.join(REPO, "models", "*.py"))]:
        for module in _imported_modules(path):
            top = module.split(".")[0]
            assert top not in forbidden, f"{path} imports {module}"
            if top == "tensorflow":  # only for TensorFlow's own memory and device queries
                assert path == SCRIPT, f"{path} imports {module}"
    # Nothing backend-related at module level: the driver picks KERAS_BACKEND first.
    with open(SCRIPT, encoding="utf-8") as f:
        top_level = [node for node in ast.parse(f.read()).body
                     if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name.split(".")[0] for node in top_level for alias in node.names}
    assert not names & {"keras", "tensorflow", "jax", "torch", "numpy", "models"}, names


def test_settings_quick_defaults_and_overrides():
    bench = _bench()
    args = bench.build_parser().parse_args(["--quick", "--steps", "5"])
    settings = bench.resolve_settings(args)
    assert settings["steps"] == 5 and settings["batch_size"] == 8
    assert settings["models"] == ["hccr_resnet_tiny", "crnn_tiny"]
    full = bench.resolve_settings(bench.build_parser().parse_args([]))
    assert full["batch_size"] == 256 and full["models"] is None
    with pytest.raises(SystemExit, match="--batch-size must be at least 1"):
        bench.resolve_settings(bench.build_parser().parse_args(["--batch-size", "0"]))


def test_a_failed_row_is_shown_not_dropped():
    bench = _bench()
    table = bench.format_table([{"model": "crnn", "precision": "mixed_float16",
                                 "error": "ValueError: a | b"}], ["Command: `x`"])
    assert "| crnn | mixed_float16 | FAILED: ValueError: a / b |" in table


@pytest.mark.slow
def test_measure_in_process_and_a_line_too_narrow_for_its_labels():
    import keras
    bench = _bench()
    settings = dict(bench.QUICK, line_width=32, jit_compile="off")
    try:
        row = bench.measure("hccr_resnet_tiny", "float32", settings)
        with pytest.raises(ValueError, match="--line-width 32 gives 8 CTC frames"):
            bench.measure("crnn_tiny", "float32", settings)
    finally:
        keras.config.set_dtype_policy("float32")
    assert row["forward_images_per_s"] > 0 and row["train_images_per_s"] > 0
    assert row["memory"] == "process max RSS (CPU)" and row["train_peak_bytes"] > 10 * 2**20
    assert row["params"] > 0 and row["flops"] > 0 and row["input"] == "32x32"
    assert row["device"].startswith("CPU: ") and "keras 3" in row["versions"]


@pytest.mark.slow
def test_quick_run_on_the_tensorflow_backend(tmp_path):
    out, rows_json = tmp_path / "bench.md", tmp_path / "bench.json"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    # One precision and no XLA: each row is a fresh process that imports TensorFlow and traces
    # its steps, most of a minute on 2 busy cores. mixed_float16 is the precision with the
    # most machinery (loss scaling; CTC in float32 on float16 logits).
    done = subprocess.run([sys.executable, SCRIPT, "--quick", "--precisions", "mixed_float16",
                           "--jit-compile", "off", "--out", str(out), "--json", str(rows_json)],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    assert table.strip() == done.stdout.strip()
    assert ("Command: `KERAS_BACKEND=tensorflow python bench/bench_models_gpu.py --quick "
            "--precisions mixed_float16 --jit-compile off --out " in table)
    assert "Backend: tensorflow; keras 3" in table and "Device: CPU: " in table
    rows = json.loads(rows_json.read_text())["rows"]
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("hccr_resnet_tiny", "mixed_float16"), ("crnn_tiny", "mixed_float16")]
    for row in rows:
        assert "error" not in row, row
        assert row["forward_images_per_s"] > 0 and row["train_images_per_s"] > 0
        assert row["train_peak_bytes"] >= row["forward_peak_bytes"] > 0
        assert row["memory"] == "process max RSS (CPU)"
        assert f"| {row['model']} | {row['precision']} |" in table
    assert "FAILED" not in table


def test_require_gpu_refuses_to_measure_on_the_cpu():
    bench = _bench()
    with pytest.raises(RuntimeError, match="--require-gpu: the tensorflow backend sees no GPU"):
        bench.measure("hccr_resnet_tiny", "float32", dict(bench.QUICK, require_gpu=True))
