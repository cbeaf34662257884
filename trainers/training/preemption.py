"""Stop at a step boundary with a checkpoint when the scheduler asks: SLURM's `--signal`
(USR1 before the time limit), a requeue or preemption (SIGTERM, then SIGKILL after KillWait),
Kubernetes' pod deletion (SIGTERM).

    guard = preemption.PreemptionGuard(dist, ckpt)   # last in the callback list
    with guard.installed():
        model.fit(..., callbacks=[..., ckpt, guard])  # raises Preempted after the checkpoint

A signal only sets a flag. At a check step the processes agree on it (any process that got a
signal stops them all, at the same step: a signal reaches the ranks at slightly different
moments), the chief saves the resumable checkpoint, every process waits for that save, and
`Preempted` is raised.

Under Horovod and MultiWorker that agreement is a collective (an all-reduce of the flag, a
round trip among all processes), so it happens every `check_period` steps (`CHECK_EVERY_STEPS`,
or the checkpoint period when that is shorter), not at every step; on one process it is
free and happens at every step. The check steps are the global steps divisible by the period,
and every process counts the global step alike, so all of them join the same collectives and
stop at the same step.

`hccr-train` turns `Preempted` into exit status `PREEMPTED_EXIT` (75, EX_TEMPFAIL: "try
again"), which the rendered SLURM script answers by requeueing the job; rerunning the same
command anywhere resumes from the checkpoint. A run that is not finished never exits 0.
"""
from __future__ import annotations

import contextlib
import signal
import threading

import keras

from trainers.training.stop_signals import PREEMPTED_EXIT, SIGNALS  # noqa: F401

# Steps between two agreements on the stop flag when agreeing is a collective. A stop signal
# gives minutes of notice (USR1 300 s before SLURM's time limit) or at least SLURM's KillWait /
# Kubernetes' grace period (30 s by default) before SIGKILL; 20 steps of this project's models
# take seconds, while a collective at every step would add a round trip to each of them.
CHECK_EVERY_STEPS = 20
# The strategies whose `any_process` is a collective (elsewhere it returns the local flag).
_COLLECTIVE = ("horovod", "multi_worker")


def check_period(kind: str, checkpoint_every_steps: int) -> int:
    """Steps between two checks of the stop flag for a distribution of `kind`.

    Every step where checking is free (one process); else `CHECK_EVERY_STEPS`, or the
    checkpoint period when that is shorter: a run that checkpoints every k steps has said how
    many steps it is prepared to lose, and a stop should not wait longer than that.
    """
    if kind not in _COLLECTIVE:
        return 1
    if checkpoint_every_steps:
        return min(CHECK_EVERY_STEPS, checkpoint_every_steps)
    return CHECK_EVERY_STEPS


class Preempted(Exception):
    """Training stopped on a signal after checkpointing at `step`."""

    def __init__(self, signal_name: str, step: int):
        super().__init__(f"stopped by {signal_name} at step {step} with a checkpoint; rerun the "
                         f"same command to resume from it")
        self.signal_name = signal_name
        self.step = step


class PreemptionGuard(keras.callbacks.Callback):
    """Checkpoints and raises `Preempted` at the first check step after a stop signal.

    Must come after the `ResumableCheckpoint` in the callback list: the checkpoint callback's
    batch-begin hook has then counted the step that just finished.

    Args:
      dist: the `strategy.Distribution` (its `any_process` makes every process stop at the
        same step).
      checkpoint: the run's `trainers.training.checkpoint.ResumableCheckpoint`.
      signals: the signals that ask for a stop.
      check_every: steps between checks (default: `check_period` for `dist` and the
        checkpoint's period); the same in every process.
    """

    def __init__(self, dist, checkpoint, signals=SIGNALS, check_every: int | None = None):
        super().__init__()
        self.dist = dist
        self.checkpoint = checkpoint
        self.signals = tuple(signals)
        self.check_every = (check_period(dist.kind, checkpoint.every_steps)
                            if check_every is None else int(check_every))
        if self.check_every < 1:
            raise ValueError(f"PreemptionGuard: check_every={check_every!r}; allowed: >= 1")
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
        # The global step (steps finished), the same in every process: they all check here.
        if self.checkpoint.step % self.check_every:
            return
        if not self.dist.any_process(self.received is not None):
            return
        self.checkpoint.save()  # chief only
        self.dist.any_process(False)  # every process waits until the chief's save is done
        raise Preempted(self.received or "a stop signal on another process",
                        self.checkpoint.step)
