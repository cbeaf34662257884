import json

import numpy as np

from beam_preprocess.contract import dgrl, gnt
from beam_preprocess.contract.inspect_cli import main as inspect_main
from tests.test_gnt import REAL_COUNTS


def _run(capsys, *argv):
    code = inspect_main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_real_sample_summary(capsys, casia_sample_dir):
    code, summary, _ = _run(capsys, str(casia_sample_dir / "*.gnt"))
    assert code == 0
    assert summary["files"] == 4
    assert summary["gnt"]["samples"] == 11154 and summary["gnt"]["classes"] == 21
    assert summary["gnt"]["counts"] == REAL_COUNTS
    assert summary["problems"] == []


def test_malformed_and_mixed_files(tmp_path, capsys):
    good = tmp_path / "good.gnt"
    gnt.write_gnt(str(good), [("中", np.zeros((3, 4), np.uint8)),
                              ("国", np.zeros((5, 2), np.uint8))])
    bad = tmp_path / "bad.gnt"
    bad.write_bytes(good.read_bytes()[:-4])
    page = tmp_path / "p.dgrl"
    dgrl.write_dgrl(str(page), page_height=9, page_width=9,
                    lines=[("中文", 0, 0, np.zeros((2, 5), np.uint8))])
    code, summary, err = _run(capsys, str(good), str(bad), str(page))
    assert code == 1
    assert summary["gnt"]["samples"] == 3 and summary["gnt"]["counts"] == {"中": 2, "国": 1}
    assert summary["dgrl"]["lines"] == 1 and summary["dgrl"]["characters"] == 2
    assert summary["malformed_files"] == [str(bad)]
    [problem] = summary["problems"]
    assert problem["file"] == str(bad) and problem["offset"] == 22
    assert "truncated bitmap" in problem["reason"]
    assert f"{bad}: byte offset 22" in err


def test_unknown_extension_and_missing_glob(tmp_path, capsys):
    other = tmp_path / "x.png"
    other.write_bytes(b"\x89PNG")
    code, summary, _ = _run(capsys, str(other))
    assert code == 1 and "expected a .gnt or .dgrl" in summary["problems"][0]["reason"]
    assert inspect_main([str(tmp_path / "none*.gnt")]) == 2
    assert "matches no file" in capsys.readouterr().err
