"""A stop signal outside the training steps (start-up, final evaluation) ends hccr-train with
exit status 75 and one line, instead of SIGUSR1's default action (death without a status the
SLURM script can requeue on)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from trainers.training import main as train_main
from trainers.training import stop_signals


def _raise_signal_and_wait(signum):
    os.kill(os.getpid(), signum)
    for _ in range(100):  # the handler runs at the next bytecode boundary of the main thread
        time.sleep(0.01)
    raise AssertionError("the signal handler did not run")


@pytest.mark.parametrize("signum", stop_signals.SIGNALS)
def test_a_stop_signal_raises_and_the_handlers_are_restored(signum):
    before = signal.getsignal(signum)
    with pytest.raises(stop_signals.StoppedOutsideTraining,
                       match=f"stopped by {signal.Signals(signum).name} outside the training "
                             "steps .*rerun the same command to resume"):
        with stop_signals.stop_signals_end_the_run():
            _raise_signal_and_wait(signum)
    assert signal.getsignal(signum) is before


def test_it_is_not_swallowed_by_except_exception():
    with pytest.raises(stop_signals.StoppedOutsideTraining):
        with stop_signals.stop_signals_end_the_run():
            try:
                _raise_signal_and_wait(signal.SIGUSR1)
            except Exception:  # e.g. a best-effort file write's guard
                pass


def test_hccr_train_exits_75_when_signalled_outside_training(monkeypatch, capsys, tmp_path):
    pytest.importorskip("tensorflow")
    from trainers.training import train

    def signalled_during_start_up(config, workdir, data_dir, **kwargs):
        _raise_signal_and_wait(signal.SIGTERM)

    monkeypatch.setattr(train, "train_and_evaluate", signalled_during_start_up)
    before = signal.getsignal(signal.SIGTERM)
    status = train_main.main(["--config", "smoke", "--data", str(tmp_path), "--workdir",
                              str(tmp_path / "run")])
    assert status == stop_signals.PREEMPTED_EXIT == 75
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("hccr-train: stopped by SIGTERM outside the training steps")
    assert signal.getsignal(signal.SIGTERM) is before


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (the SigCgt mask of /proc)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (signum - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_sigusr1_during_start_up_of_a_real_hccr_train(tmp_path):
    """The signal comes as soon as the process catches it: while TensorFlow is imported, long
    before the first step. Without the handler SIGUSR1 kills the process (status -10)."""
    from tests import tiny_data
    from tests.conftest import REPO
    data = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "trainers.training.main", "--config", "smoke", "--data", data,
         "--workdir", str(tmp_path / "run"), "--set", "model=lenet", "--set", "epochs=1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while process.poll() is None and not _catches(process.pid, signal.SIGUSR1):
        assert time.monotonic() < deadline, "hccr-train never installed its SIGUSR1 handler"
        time.sleep(0.005)
    process.send_signal(signal.SIGUSR1)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 75, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("hccr-train: stopped by SIGUSR1")
    assert not (tmp_path / "run" / "metrics.json").exists()
