"""hccr-train where worker 1 of a MultiWorker job shifts one weight after training, for the
test that the replicas' digests are compared across workers (synchronous training otherwise
keeps every copy equal, so the check would never be seen to fail).

    TF_CONFIG=... python -m tests.perturbed_train --config smoke --strategy multi_worker ...

Everything else is the real `hccr-train`: the shift is one more Keras callback.
"""
from __future__ import annotations

import json
import os
import sys

import keras


class ShiftOnWorkerOne(keras.callbacks.Callback):
    """Adds 1 to the first trainable weight's copies on worker 1 only (no collective)."""

    def on_train_end(self, logs=None):
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
            weight = self.model.trainable_weights[0]
            weight.assign(weight + 1.0)


def main(argv=None) -> int:
    from trainers.training import main as train_main
    from trainers.training import train
    real = train.train_and_evaluate

    def shifted(config, workdir, data_dir, **kwargs):
        kwargs["extra_callbacks"] = [*(kwargs.get("extra_callbacks") or []), ShiftOnWorkerOne()]
        return real(config, workdir, data_dir, **kwargs)

    train.train_and_evaluate = shifted
    return train_main.main(argv)


if __name__ == "__main__":
    sys.exit(main())
