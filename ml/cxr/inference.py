"""Chest X-ray lung segmentation inference: one image in, a right/left label map out.

``CXRPredictor.from_registry("cxr")`` loads the default model once (Celery workers keep one per
process); ``predict(image, photometric)`` runs preprocessing → network (optionally with a
horizontal-flip test-time augmentation whose right/left channels are swapped back) →
post-processing on the model grid → bilinear resampling of the class probabilities to the
original size → argmax. The network can run in PyTorch or in onnxruntime (same masks).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ml.cxr.postprocess import PostprocessConfig, fix_sides, postprocess
from ml.cxr.preprocessing import BlankImageError, LetterboxGeometry, prepare_image
from ml.registry import SOURCE_SHA256_KEY, ModelCard, WeightsIntegrityError, load_model, resolve, verify_weights

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """Maps a float32 batch (B, 1, S, S) to logits (B, C, S, S) as numpy."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """PyTorch forward pass (no grad, eval mode)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        return self.model(x).float().cpu().numpy()


class OnnxBackend:
    """onnxruntime forward pass of an exported model (CPU execution provider)."""

    def __init__(self, onnx_path: Path, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32)})[0]


@dataclass
class PredictionResult:
    """Output of :meth:`CXRPredictor.predict`.

    Attributes:
        labels: (H, W) uint8 at the input's size: 0 background, 1 right lung, 2 left lung.
        confidence: 1 − mean normalised entropy over the lung region (1 = certain, QC score).
        mean_entropy: mean normalised entropy (0..1) over the lungs and their border.
        areas_px: pixel count per label name.
        areas_mm2: area per label name in mm² when a pixel spacing was given.
        timings_ms: preprocessing / model / postprocessing / total wall times.
        model_name: name of the model card used.
    """

    labels: np.ndarray
    confidence: float
    mean_entropy: float
    areas_px: dict[str, int]
    areas_mm2: dict[str, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_name: str = ""


def softmax_np(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def flip_back(probs: np.ndarray) -> np.ndarray:
    """Undo a horizontal flip on (C, H, W) probabilities and swap right/left lung channels."""
    out = probs[..., ::-1]
    if out.shape[0] >= 3:
        out = out[[0, 2, 1, *range(3, out.shape[0])]]
    return np.ascontiguousarray(out)


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Per-pixel entropy of (C, H, W) probabilities divided by log(C): values in [0, 1]."""
    p = np.clip(probs, 1e-8, 1.0)
    return -(p * np.log(p)).sum(0) / np.log(probs.shape[0])


def clean_probs(probs: np.ndarray, cfg: PostprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Post-process the argmax of (C, S, S) probabilities and make the probabilities agree.

    Where post-processing changed a pixel's label, its probabilities become one-hot of the
    new label, so that resampling to full size reproduces the cleaned map with smooth borders.

    Returns:
        (adjusted probabilities (C, S, S), cleaned labels (S, S) uint8).
    """
    raw = probs.argmax(0).astype(np.uint8)
    cfg_no_sides = PostprocessConfig(**{**cfg.to_dict(), "fix_sides": False})
    cleaned = postprocess(raw, cfg_no_sides)
    changed = cleaned != raw
    if changed.any():
        probs = probs.copy()
        onehot = np.eye(probs.shape[0], dtype=probs.dtype)[cleaned[changed]]
        probs[:, changed] = onehot.T
    return probs, cleaned


def labels_from_probs(probs: np.ndarray, geom: LetterboxGeometry, post: PostprocessConfig) -> tuple[np.ndarray, float]:
    """Post-process canvas probabilities (C, S, S) and return (labels (H, W) uint8 at original size, entropy)."""
    probs, cleaned = clean_probs(probs, post)
    entropy = lung_entropy(probs, cleaned)
    if post.fix_sides and not np.array_equal(fix_sides(cleaned), cleaned):
        probs = probs[[0, 2, 1, *range(3, probs.shape[0])]]
    return resample_labels(probs, geom), entropy


def _bilinear_taps(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of a bilinear resize along one axis (PyTorch's
    ``align_corners=False`` convention: ``src = (dst + 0.5) · n_in / n_out − 0.5``, clamped at 0)."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy((src - i0).astype(np.float32))


def _labels_from_differences(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Three-class argmax from ``a = p1 − p0`` and ``b = p2 − p0`` (ties to the lower label), uint8."""
    one = ((a > 0) & (a >= b)).to(torch.uint8)
    two = ((b > 0) & (b > a)).to(torch.uint8)
    return one + 2 * two


def resample_labels(probs: np.ndarray, geom: LetterboxGeometry) -> np.ndarray:
    """Argmax of canvas probabilities (C, S, S) resampled bilinearly to the original (H, W), uint8.

    For three classes, bilinear resampling is linear, so only the two differences p1 − p0 and
    p2 − p0 are resampled and compared (same result as the argmax of the resampled
    probabilities, ties going to the lower label). Only the output window whose source pixels
    include a lung is interpolated: an output pixel whose four source pixels are all
    background (both differences ≤ 0) is a convex combination of non-positive values, hence
    background, so the rest of a large image is filled with 0 without interpolating it.
    """
    crop = probs[:, geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w]
    size = (geom.orig_h, geom.orig_w)
    if crop.shape[0] != 3:
        t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None]
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].argmax(0).to(torch.uint8).numpy()
    diffs = torch.from_numpy(np.ascontiguousarray(crop[1:] - crop[:1], dtype=np.float32))
    out = np.zeros(size, dtype=np.uint8)
    lung = _labels_from_differences(diffs[0], diffs[1]) > 0
    if not bool(lung.any()):
        return out
    rows, cols = torch.nonzero(lung.any(1)).flatten(), torch.nonzero(lung.any(0)).flatten()
    iy0, iy1, wy = _bilinear_taps(size[0], crop.shape[1])
    ix0, ix1, wx = _bilinear_taps(size[1], crop.shape[2])
    ysel = torch.nonzero((iy1 >= rows[0]) & (iy0 <= rows[-1])).flatten()
    xsel = torch.nonzero((ix1 >= cols[0]) & (ix0 <= cols[-1])).flatten()
    ya, yb, xa, xb = int(ysel[0]), int(ysel[-1]) + 1, int(xsel[0]), int(xsel[-1]) + 1
    wx_w = wx[xa:xb]
    across = diffs[:, :, ix0[xa:xb]] * (1 - wx_w) + diffs[:, :, ix1[xa:xb]] * wx_w  # (2, h, nx)
    wy_w = wy[ya:yb, None]
    window = (1 - wy_w) * across[:, iy0[ya:yb]] + wy_w * across[:, iy1[ya:yb]]  # (2, ny, nx)
    out[ya:yb, xa:xb] = _labels_from_differences(window[0], window[1]).numpy()
    return out


def lung_entropy(probs: np.ndarray, cleaned: np.ndarray) -> float:
    """Mean normalised entropy of (C, S, S) probabilities over the predicted lungs dilated by 3 pixels."""
    region = ndimage.binary_dilation(cleaned > 0, iterations=3)
    if not region.any():
        region = np.ones_like(cleaned, dtype=bool)
    return float(normalized_entropy(probs)[region].mean())


class CXRPredictor:
    """Loaded chest X-ray lung model ready for repeated ``predict`` calls.

    Args:
        backend: network forward (PyTorch or onnxruntime).
        card: the model card (input size, preprocessing, post-processing, labels).
        tta_flip: average with the horizontally flipped prediction (labels swapped back);
            default from the card's ``inference.tta_flip``.
        postprocessing: override the card's post-processing settings.
    """

    def __init__(
        self,
        backend: Backend,
        card: ModelCard,
        tta_flip: bool | None = None,
        postprocessing: PostprocessConfig | dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.card = card
        self.size = int(card.input_size[-1])
        self.pre = dict(card.preprocessing)
        self.tta_flip = bool(card.inference.get("tta_flip", False)) if tta_flip is None else tta_flip
        if isinstance(postprocessing, PostprocessConfig):
            self.post = postprocessing
        else:
            self.post = PostprocessConfig.from_dict(postprocessing if postprocessing is not None else card.postprocessing)

    @classmethod
    def from_registry(
        cls,
        name: str = "cxr",
        device: str | None = None,
        backend: str = "torch",
        num_threads: int | None = None,
        **kwargs: Any,
    ) -> CXRPredictor:
        """Load a registered model (default: the shipped chest X-ray model).

        Args:
            name: model name, alias or weights path.
            device: torch device; CUDA when available, else CPU.
            backend: ``"torch"`` or ``"onnx"`` (needs ``<weights>.onnx`` from ``python -m ml export``).
            num_threads: CPU threads for the chosen backend.
            **kwargs: ``tta_flip`` / ``postprocessing`` overrides.
        """
        if backend == "onnx":
            card = resolve(name)
            verify_weights(card)
            onnx_path = card.weights_path.with_suffix(".onnx")
            if not onnx_path.is_file():
                raise FileNotFoundError(f"no ONNX export {onnx_path}; run: python -m ml export --model {name}")
            onnx_backend = OnnxBackend(onnx_path, num_threads)
            source = onnx_backend.session.get_modelmeta().custom_metadata_map.get(SOURCE_SHA256_KEY)
            if source != card.sha256:
                raise WeightsIntegrityError(
                    f"{onnx_path} was not exported from {card.weights_path.name} (its source sha256 is {source}, "
                    f"the card's is {card.sha256}); re-export: python -m ml export --model {name}")
            return cls(onnx_backend, card, **kwargs)
        if backend != "torch":
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        if num_threads:
            torch.set_num_threads(num_threads)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, card = load_model(name, device=str(dev))
        return cls(TorchBackend(model, dev), card, **kwargs)

    def probabilities(self, canvas: np.ndarray) -> np.ndarray:
        """Class probabilities (C, S, S) for one preprocessed (S, S) canvas."""
        batch = canvas[None, None].astype(np.float32)
        if self.tta_flip:
            batch = np.concatenate([batch, batch[..., ::-1]], axis=0)
        probs = softmax_np(self.backend(np.ascontiguousarray(batch)))
        if self.tta_flip:
            return 0.5 * (probs[0] + flip_back(probs[1]))
        return probs[0]

    def predict(
        self,
        image: np.ndarray,
        photometric: str = "MONOCHROME2",
        spacing: tuple[float, float] | None = None,
    ) -> PredictionResult:
        """Segment the lungs of one chest X-ray.

        Args:
            image: (H, W) grayscale (8/16-bit or float), (H, W, 3) RGB or (H, W, 4) RGBA.
            photometric: DICOM Photometric Interpretation; MONOCHROME1 is inverted.
            spacing: (row, column) pixel spacing in mm, for areas in mm².

        Returns:
            :class:`PredictionResult` with ``labels`` at the input's (H, W). A blank image
            (every pixel the same value) gets an empty mask with confidence 0.

        Raises:
            ml.cxr.preprocessing.ImageFormatError: the array is not a usable image.
        """
        t0 = time.perf_counter()
        try:
            canvas, geom = prepare_image(
                image, self.size, photometric,
                float(self.pre.get("low_pct", 0.5)), float(self.pre.get("high_pct", 99.5)),
            )
        except BlankImageError as error:
            logger.warning("%s: returning an empty mask", error)
            ms = 1e3 * (time.perf_counter() - t0)
            labels = np.zeros(np.asarray(image).shape[:2], dtype=np.uint8)
            return self._result(labels, 1.0, spacing, {"preprocess": ms, "model": 0.0, "postprocess": 0.0, "total": ms})
        t1 = time.perf_counter()
        probs = self.probabilities(canvas)
        t2 = time.perf_counter()
        labels, entropy = labels_from_probs(probs, geom, self.post)
        t3 = time.perf_counter()
        return self._result(labels, entropy, spacing, {"preprocess": 1e3 * (t1 - t0), "model": 1e3 * (t2 - t1),
                                                       "postprocess": 1e3 * (t3 - t2), "total": 1e3 * (t3 - t0)})

    def _result(self, labels: np.ndarray, entropy: float, spacing: tuple[float, float] | None,
                timings_ms: dict[str, float]) -> PredictionResult:
        names = {int(k): v for k, v in self.card.labels.items() if int(k) > 0}
        areas = {name: int(np.count_nonzero(labels == value)) for value, name in names.items()}
        areas_mm2 = None
        if spacing is not None:
            areas_mm2 = {k: v * float(spacing[0]) * float(spacing[1]) for k, v in areas.items()}
        return PredictionResult(labels=labels, confidence=1.0 - entropy, mean_entropy=entropy, areas_px=areas,
                                areas_mm2=areas_mm2, timings_ms=timings_ms, model_name=self.card.name)
