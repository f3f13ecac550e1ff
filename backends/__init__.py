"""Implementations of :class:`inference_iface.InferenceInterface` (ONNX Runtime, Triton)."""
