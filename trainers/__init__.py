"""Training (`trainers.training`) and serving (`trainers.serving`: evaluation, export,
inference and prediction) of the hccr models.

Training: `trainers.training.train.train_and_evaluate(config, workdir, data_dir)`, behind the
`hccr-train` command (`trainers/training/main.py`); configs in `trainers/training/configs.py`.
"""
