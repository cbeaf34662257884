"""Stop at a step boundary with a checkpoint when the scheduler asks: SLURM's `--signal`
(USR1 before the time limit), a requeue or preemption (SIGTERM, then SIGKILL after KillWait),
Kubernetes' pod deletion (SIGTERM).

    guard = preemption.PreemptionGuard(dist, ckpt)   # last in the callback list
    with guard.installed():
        model.fit(..., callbacks=[..., ckpt, guard])  # raises Preempted after the checkpoint

A signal only sets a flag. At every step boundary the processes agree on it (any process
that got a signal stops them all, at the same step: a signal reaches the ranks at slightly
different moments), the chief saves the resumable checkpoint, every process waits for that
save, and `Preempted` is raised. `hccr-train` turns it into exit status `PREEMPTED_EXIT`
(75, EX_TEMPFAIL: "try again"), which the rendered SLURM script answers by requeueing the job;
rerunning the same command anywhere resumes from the checkpoint. A run that is not
finished never exits 0.
"""
from __future__ import annotations

import contextlib
import signal
import threading

import keras

PREEMPTED_EXIT = 75  # EX_TEMPFAIL; launch/slurm.py requeues the job on it
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(Exception):
    """Training stopped on a signal after checkpointing at `step`."""

    def __init__(self, signal_name: str, step: int):
        super().__init__(f"stopped by {signal_name} at step {step} with a checkpoint; rerun the "
                         f"same command to resume from it")
        self.signal_name = signal_name
        self.step = step


class PreemptionGuard(keras.callbacks.Callback):
    """Checkpoints and raises `Preempted` at the first step boundary after a stop signal.

    Must come after the `ResumableCheckpoint` in the callback list: the checkpoint callback's
    batch-begin hook has then counted the step that just finished.

    Args:
      dist: the `strategy.Distribution` (its `any_process` makes every process stop at the
        same step).
      checkpoint: the run's `trainers.training.checkpoint.ResumableCheckpoint`.
      signals: the signals that ask for a stop.
    """

    def __init__(self, dist, checkpoint, signals=SIGNALS):
        super().__init__()
        self.dist = dist
        self.checkpoint = checkpoint
        self.signals = tuple(signals)
        self.received: str | None = None

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self):
        """The signal handlers, for the duration of training (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in self.signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def on_train_batch_begin(self, batch, logs=None):
        if not self.dist.any_process(self.received is not None):
            return
        self.checkpoint.save()  # chief only
        self.dist.any_process(False)  # every process waits until the chief's save is done
        raise Preempted(self.received or "a stop signal on another process",
                        self.checkpoint.step)
