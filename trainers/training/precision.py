"""Numeric precision of a run: float32, mixed_float16 (GPU, with loss scaling) or mixed_bfloat16.

"auto" picks mixed_float16 where a GPU is visible, mixed_bfloat16 on CPUs with native bfloat16
(measured about 2x faster than float32 for a ResNet on an AVX512-BF16 CPU, while float16 on a
CPU is about 3x slower than float32), and float32 on other CPUs. Models keep their logits in
float32; under mixed_float16 the trainer wraps the optimizer in a `LossScaleOptimizer` itself
(so Horovod can all-reduce before its finite check, see `trainers.training.strategy`).
"""
from __future__ import annotations

import keras
import tensorflow as tf

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); Linux only."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(name: str) -> str:
    """The policy name for `name` ("auto" or one of POLICIES) on this machine.

    "auto": mixed_float16 with a GPU; mixed_bfloat16 on a CPU with native bfloat16; float32 on
    other CPUs (emulated bfloat16 is slower than float32).
    """
    if name == "auto":
        if tf.config.list_physical_devices("GPU"):
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"
    if name not in POLICIES:
        raise ValueError(f"precision must be 'auto' or one of {POLICIES}. Received: {name!r}")
    return name


def apply(name: str) -> str:
    """Sets Keras' global dtype policy (before building the model); returns the policy name."""
    policy = resolve(name)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def needs_loss_scaling(policy: str) -> bool:
    return policy == "mixed_float16"
