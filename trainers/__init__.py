"""Training, evaluation, inference and export of the hccr models.

Training: `trainers.train.train_and_evaluate(config, workdir, data_dir)`, behind the
`hccr-train` command (`trainers/main.py`); configs in `trainers/configs.py`.
"""
