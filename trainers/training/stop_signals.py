"""The stop signals of a scheduler and what hccr-train does with them outside training steps.

SLURM sends USR1 before the time limit (`--signal`) and SIGTERM on requeue or preemption;
Kubernetes sends SIGTERM on pod deletion. While training steps run,
`trainers.training.preemption.PreemptionGuard` handles them (a checkpoint at the next step);
this module covers the rest of the process's life and has no TensorFlow or Keras import, so
that `hccr-train` can install it first.
"""
from __future__ import annotations

import contextlib
import signal
import threading

PREEMPTED_EXIT = 75  # EX_TEMPFAIL; launch/slurm.py requeues the job on it
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StoppedOutsideTraining(BaseException):
    """A stop signal arrived while no training step ran (start-up, final evaluation).

    A BaseException, as KeyboardInterrupt is: an `except Exception` that guards a file write
    or a warning must not swallow the stop.
    """

    def __init__(self, signal_name: str):
        super().__init__(f"stopped by {signal_name} outside the training steps (the last "
                         f"checkpoint stays as it was); rerun the same command to resume")


@contextlib.contextmanager
def stop_signals_end_the_run():
    """From start-up to exit, SLURM's USR1 or a SIGTERM ends hccr-train with exit status 75.

    Left alone, USR1 kills a process that has not installed a handler: a job warned during its
    start-up (importing TensorFlow, reading data, building the model) would die without the
    exit status that requeues it. While training steps run, `preemption.PreemptionGuard` takes
    the signals over (it checkpoints at the next step); outside them, the signal raises
    `StoppedOutsideTraining` at once, as Ctrl-C raises KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise StoppedOutsideTraining(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
