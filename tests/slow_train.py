"""hccr-train with a pause after every training step, for tests that interrupt a running job
(the tiny test models otherwise finish before a signal reaches them).

    python -m tests.slow_train SECONDS --config smoke --data DIR --workdir DIR ...

Everything else is the real `hccr-train`: the pause is one more Keras callback.
"""
from __future__ import annotations

import sys
import time

import keras


class Pause(keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    seconds = float(argv.pop(0))
    from trainers.training import main as train_main
    from trainers.training import train
    real = train.train_and_evaluate

    def paused(config, workdir, data_dir, **kwargs):
        kwargs["extra_callbacks"] = [*(kwargs.get("extra_callbacks") or []), Pause(seconds)]
        return real(config, workdir, data_dir, **kwargs)

    train.train_and_evaluate = paused
    return train_main.main(argv)


if __name__ == "__main__":
    sys.exit(main())
