"""Keras 3 models for handwritten Chinese character and text-line recognition.

Only `keras.layers` and `keras.ops` are used here (no TensorFlow import), so every model builds
and runs on the TensorFlow, JAX and PyTorch backends. Models return float32 logits; the trainer
owns the losses (CTC helpers for the CRNN are in `models.ctc`).

    import models
    model = models.build_model("hccr_resnet_compact", num_classes=3755, input_shape=(64, 64, 1))
"""
from models import ctc
from models.crnn import CRNN_WIDTH_DOWNSAMPLE, build_crnn, crnn_time_steps
from models.hccr_resnet import build_hccr_resnet
from models.layers import CollapseHeight
from models.lenet import build_lenet
from models.registry import available_models, build_model, is_sequence_model, model_arguments

__all__ = [
    "CRNN_WIDTH_DOWNSAMPLE",
    "CollapseHeight",
    "available_models",
    "build_crnn",
    "build_hccr_resnet",
    "build_lenet",
    "build_model",
    "crnn_time_steps",
    "ctc",
    "is_sequence_model",
    "model_arguments",
]
