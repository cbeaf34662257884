"""Serving a trained model: evaluation (`hccr-eval`), export to SavedModel/TFLite/ONNX/TensorRT
(`hccr-export`), one loader for every format (`inference`, `tensorrt`) and prediction on files
(`hccr-predict`).
"""
