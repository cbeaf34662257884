"""Errors for people, tracebacks for bugs: every hccr-* command runs inside
`cli_errors.entry_point`; user errors are one line with exit status 2, bugs a traceback with
70, and `--debug` / HCCR_DEBUG=1 show every traceback."""
import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

from beam_preprocess import cli_errors

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = os.path.dirname(sys.executable)


def _entry_points() -> dict[str, str]:
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    return dict(re.findall(r'"(hccr-[a-z]+)=([\w.]+:main)"', text))


def test_every_command_runs_inside_the_shared_handler():
    points = _entry_points()
    assert len(points) >= 9, points  # a new command must run inside it too
    for name, target in points.items():
        module, _, attr = target.partition(":")
        main = getattr(importlib.import_module(module), attr)
        assert getattr(main, "__wrapped__", None) is not None, name


def _command(error):
    @cli_errors.entry_point("hccr-x")
    def main(argv=None):
        main.seen = argv
        raise error
    return main


def test_a_user_error_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    main = _command(FileNotFoundError("data/x/metadata.json not found: is 'data/x' a "
                                      "directory\nwritten by hccr-preprocess?"))
    assert main(["--flag"]) == 2
    assert capsys.readouterr().err == ("hccr-x: error: data/x/metadata.json not found: is "
                                       "'data/x' a directory written by hccr-preprocess?\n")


def test_a_bug_keeps_its_traceback_and_exits_70(capsys):
    assert _command(ZeroDivisionError("division by zero"))([]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
    assert err.rstrip().endswith("please report it with the traceback above")


def test_debug_flag_and_environment_show_the_traceback(capsys, monkeypatch):
    main = _command(ValueError("bad value"))
    assert main(["a", "--debug", "b", "--", "--debug"]) == 2
    assert main.seen == ["a", "b", "--", "--debug"]  # after `--` it belongs to the command
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("hccr-x: error: bad value\n")
    monkeypatch.setenv(cli_errors.DEBUG_ENV, "1")
    assert main([]) == 2 and "Traceback" in capsys.readouterr().err


def test_interrupt_is_one_line(capsys):
    assert _command(KeyboardInterrupt())([]) == 130
    assert capsys.readouterr().err == "hccr-x: interrupted\n"


# === The real commands ===


def _train(capsys, data, tmp_path):
    from trainers.training import main
    capsys.readouterr()
    code = main.main(["--config", "smoke", "--data", str(data), "--workdir",
                      str(tmp_path / "run"), "--precision", "float32"])
    return code, capsys.readouterr().err


def test_train_on_a_missing_data_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    code, err = _train(capsys, tmp_path / "missing", tmp_path)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"hccr-train: error: {tmp_path / 'missing'}/metadata.json "
                                    f"not found: is '{tmp_path / 'missing'}' a directory written "
                                    f"by hccr-preprocess?")


def test_train_on_a_directory_without_metadata(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    (tmp_path / "empty").mkdir()
    code, err = _train(capsys, tmp_path / "empty", tmp_path)
    assert code == 2 and "Traceback" not in err and "metadata.json not found" in err


def test_train_on_a_charset_that_does_not_match_its_sha256(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    from tests import tiny_data
    data = pathlib.Path(tiny_data.write_chars(tmp_path / "data"))
    charset = data / "charset.txt"
    charset.write_text("\n".join(reversed(charset.read_text(encoding="utf-8").split("\n")[:4]))
                       + "\n", encoding="utf-8")
    code, err = _train(capsys, data, tmp_path)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"hccr-train: error: {charset} does not match the "
                                           f"sha256 recorded in")


def test_installed_command_prints_one_line_and_a_traceback_on_request(tmp_path):
    command = os.path.join(BIN, "hccr-eval")
    if not os.path.exists(command):
        pytest.skip("hccr-eval is not installed (pip install -e .)")
    argv = [command, "--model", str(tmp_path / "no-model.keras"), "--data",
            str(tmp_path / "missing"), "--out", str(tmp_path / "eval")]
    env = {k: v for k, v in os.environ.items() if k != cli_errors.DEBUG_ENV}
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode in (1, 2) and "Traceback" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    loud = subprocess.run(argv + ["--debug"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert loud.returncode == quiet.returncode and "Traceback" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
