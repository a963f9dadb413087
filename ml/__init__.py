"""Pleura machine-learning package: plain PyTorch, importable without Django.

Sub-modules: ``data`` (manifests, datasets), ``preprocessing`` (X-ray intensity and geometry),
``transforms`` (augmentation), ``networks`` (registry of segmentation nets), ``losses``,
``training`` (generic trainer), ``inference`` (``CXRPredictor``), ``postprocess``, ``metrics``,
``registry`` (model cards), ``export`` (ONNX / TorchScript) and ``cli``.
"""

LABELS: dict[str, str] = {"0": "background", "1": "right_lung", "2": "left_lung"}
"""Label map shared by every chest X-ray model: 1 = patient's RIGHT lung, 2 = patient's LEFT lung."""

__all__ = ["LABELS"]
