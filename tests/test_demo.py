"""The README's demo, at the reduced size CI can afford: every stage runs and reports."""
import json
import os
import subprocess
import sys

import pytest

from launch import demo


@pytest.mark.slow
def test_tiny_demo_runs_every_stage(tmp_path):
    workdir = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "launch.demo", "--size", "tiny",
                           "--workdir", str(workdir)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in summary["stages"]] == [
        "synthesize", "inspect", "preprocess chars", "preprocess lines", "train classifier",
        "train crnn", "evaluate classifier", "evaluate crnn", "export", "evaluate int8",
        "predict chars", "predict lines"]
    # The commands a user would type are printed, and the summary table closes the run.
    for command in ("$ hccr-synth", "$ hccr-preprocess", "$ hccr-train", "$ hccr-eval",
                    "$ hccr-export", "$ hccr-predict", "=== hccr demo summary (tiny) ==="):
        assert command in proc.stdout
    assert "classifier top-1 / top-5 (validation)" in summary["results"]
    assert "export tflite_int8" in summary["results"] and "export onnx" in summary["results"]
    assert (workdir / "export" / "classifier" / "tflite_int8" / "model.tflite").exists()
    assert (workdir / "eval" / "classifier" / "report.json").exists()


def test_demo_sizes_are_documented_in_help(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--help"])
    out = capsys.readouterr().out
    assert "tiny" in out and "small" in out
