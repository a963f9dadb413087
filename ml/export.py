"""Export a registered model to ONNX and TorchScript (files beside its weights by default)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.registry import SOURCE_SHA256_KEY, load_model

logger = logging.getLogger(__name__)

ONNX_OPSET = 17


class ExportMismatchError(RuntimeError):
    """The exported model's output differs from PyTorch beyond tolerance."""


def _stamp_onnx(path: Path, sha256: str) -> None:
    """Record the source weights' sha256 in the ONNX file's metadata."""
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = SOURCE_SHA256_KEY, sha256
    onnx.save(proto, str(path))


def export_model(name_or_path: str, out_dir: Path | None = None, formats: tuple[str, ...] = ("onnx", "torchscript"),
                 check: bool = True) -> dict[str, Any]:
    """Export a model and check the exported outputs against PyTorch.

    Args:
        name_or_path: model name, alias or weights path.
        out_dir: destination folder (default: beside the weights, ``<name>.onnx`` / ``<name>.ts``).
        formats: any of ``onnx`` and ``torchscript``.
        check: compare outputs on a random input (max abs logit difference and label agreement).

    Returns:
        ``{"onnx": path, "torchscript": path, "max_abs_diff": {...}}``.

    Raises:
        ExportMismatchError: labels from an exported model differ from PyTorch's.
    """
    model, card = load_model(name_or_path, device="cpu")
    folder = Path(out_dir) if out_dir else card.weights_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    size = int(card.input_size[-1])
    example = torch.rand(1, card.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model(example).numpy()
    result: dict[str, Any] = {"max_abs_diff": {}}
    if "onnx" in formats:
        path = folder / f"{card.name}.onnx"
        torch.onnx.export(
            model, (example,), str(path), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=ONNX_OPSET,
            dynamo=False,
        )
        _stamp_onnx(path, card.sha256)
        result["onnx"] = str(path)
        if check:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = sess.run(None, {"image": example.numpy()})[0]
            result["max_abs_diff"]["onnx"] = _compare(reference, out, "onnx")
    if "torchscript" in formats:
        path = folder / f"{card.name}.ts"
        traced = torch.jit.trace(model, example)
        traced.save(str(path), _extra_files={SOURCE_SHA256_KEY: card.sha256})
        result["torchscript"] = str(path)
        if check:
            with torch.inference_mode():
                out = torch.jit.load(str(path))(example).numpy()
            result["max_abs_diff"]["torchscript"] = _compare(reference, out, "torchscript")
    logger.info("exported %s: %s", card.name, result)
    return result


def _compare(reference: np.ndarray, other: np.ndarray, fmt: str) -> float:
    diff = float(np.abs(reference - other).max())
    agree = float((reference.argmax(1) == other.argmax(1)).mean())
    if agree < 0.9999:
        raise ExportMismatchError(f"{fmt} export: labels agree on only {agree:.4%} of pixels (max |Δ| {diff:.3g})")
    return diff
