"""Training: `hccr-train` (`main`), configs as code (`configs`), the tf.data input pipeline
and augmentation, the distribution switch (`strategy`), precision, losses, callbacks,
resumable checkpoints, preemption and training curves.
"""
