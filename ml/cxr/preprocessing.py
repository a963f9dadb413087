"""Chest X-ray intensity and geometry preprocessing.

Everything here works on numpy arrays so that training, inference, the ONNX path and the
Celery workers share one implementation:

* :func:`to_grayscale` accepts (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) arrays of any
  integer or float dtype (8-bit, 16-bit, float).
* :func:`normalize_intensity` maps robust percentiles to [0, 1] and inverts MONOCHROME1.
* :func:`letterbox` resizes preserving the aspect ratio and pads to a square model size;
  :func:`unletterbox` is its exact inverse for label maps / probabilities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

MIN_SIDE = 16
"""Smallest image side (pixels) we accept: below this there is no anatomy to segment."""

MAX_PIXELS = 10_000 * 10_000
"""Largest image we accept (pixels): larger inputs are almost certainly corrupt headers."""


class ImageFormatError(ValueError):
    """The input array cannot be interpreted as a chest X-ray image."""


class BlankImageError(ImageFormatError):
    """Every pixel of the image has the same value: there is nothing to segment."""


@dataclass(frozen=True)
class LetterboxGeometry:
    """How an (H, W) image was placed into a (size, size) canvas.

    Attributes:
        orig_h: original height in pixels.
        orig_w: original width in pixels.
        size: side of the square canvas.
        new_h: height of the resized image inside the canvas.
        new_w: width of the resized image inside the canvas.
        top: first row of the resized image in the canvas.
        left: first column of the resized image in the canvas.
    """

    orig_h: int
    orig_w: int
    size: int
    new_h: int
    new_w: int
    top: int
    left: int


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Convert an image of any supported layout to a float32 (H, W) array.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; integer or float dtype.

    Returns:
        (H, W) float32 array in the input's intensity units.

    Raises:
        ImageFormatError: unsupported shape, dtype, size, or non-finite values only.
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageFormatError(f"unsupported image dtype {arr.dtype}; expected integer or float")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        else:
            rgb = arr[..., :3].astype(np.float32)
            arr = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if arr.ndim != 2:
        raise ImageFormatError(
            f"expected a 2-D image (H, W) or (H, W, C) with C in 1/3/4, got shape {arr.shape}"
        )
    h, w = arr.shape
    if min(h, w) < MIN_SIDE:
        raise ImageFormatError(f"image {h}x{w} is too small; each side must be >= {MIN_SIDE} px")
    if h * w > MAX_PIXELS:
        raise ImageFormatError(f"image {h}x{w} is too large; at most {MAX_PIXELS} pixels")
    out = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):  # always finite: skip two full passes
        return out
    if not np.isfinite(out).any():
        raise ImageFormatError("image has no finite pixel values")
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def normalize_intensity(
    image: np.ndarray,
    photometric: str = "MONOCHROME2",
    low_pct: float = 0.5,
    high_pct: float = 99.5,
) -> np.ndarray:
    """Robustly rescale a grayscale X-ray to [0, 1] (bright = dense tissue).

    Args:
        image: (H, W) float array (see :func:`to_grayscale`).
        photometric: DICOM Photometric Interpretation; ``MONOCHROME1`` (bright = air) is inverted.
        low_pct: percentile mapped to 0.
        high_pct: percentile mapped to 1.

    Returns:
        (H, W) float32 array in [0, 1]. A constant image maps to all zeros.

    Raises:
        ImageFormatError: unknown photometric interpretation.
    """
    lo, hi = intensity_window(image, low_pct, high_pct)
    return apply_window(image, lo, hi, photometric)


PERCENTILE_SAMPLES = 512 * 512
"""Pixels sampled (on a regular grid) to estimate the normalisation percentiles of large images."""


def intensity_window(image: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> tuple[float, float]:
    """Robust (low, high) intensity percentiles of an (H, W) image.

    Large images are sampled on a regular grid of about :data:`PERCENTILE_SAMPLES` pixels.
    Falls back to (min, max) when the percentiles coincide.
    """
    step = max(1, int(np.sqrt(image.size / PERCENTILE_SAMPLES)))
    sample = image[::step, ::step]
    lo, hi = (float(v) for v in np.percentile(sample, [low_pct, high_pct]))
    if hi - lo < 1e-6:
        lo, hi = float(image.min()), float(image.max())
    return lo, hi


def apply_window(image: np.ndarray, lo: float, hi: float, photometric: str = "MONOCHROME2") -> np.ndarray:
    """Map [lo, hi] to [0, 1] with clipping and invert MONOCHROME1; constant windows give zeros.

    Raises:
        ImageFormatError: unknown photometric interpretation.
    """
    photometric = photometric.upper().strip()
    if photometric not in {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL"}:
        raise ImageFormatError(f"unsupported photometric interpretation {photometric!r}")
    if hi - lo < 1e-6:
        logger.warning("constant image (value %.3g): returning zeros", lo)
        return np.zeros(image.shape, dtype=np.float32)
    out = np.clip((image - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def letterbox_geometry(height: int, width: int, size: int) -> LetterboxGeometry:
    """Geometry that fits an (height, width) image into a (size, size) canvas, centred."""
    scale = size / max(height, width)
    new_h = max(1, min(size, round(height * scale)))
    new_w = max(1, min(size, round(width * scale)))
    return LetterboxGeometry(
        orig_h=height,
        orig_w=width,
        size=size,
        new_h=new_h,
        new_w=new_w,
        top=(size - new_h) // 2,
        left=(size - new_w) // 2,
    )


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxGeometry]:
    """Resize (aspect preserved, area-averaged when shrinking) and pad with zeros to (size, size).

    Args:
        image: (H, W) float32 image, typically in [0, 1].
        size: model input side.

    Returns:
        ((size, size) float32 canvas, geometry for :func:`unletterbox`).
    """
    geom = letterbox_geometry(image.shape[0], image.shape[1], size)
    resized = resize_float(image, geom.new_h, geom.new_w)
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w] = resized
    return canvas, geom


def resize_float(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float (H, W) array with PIL (box filter when shrinking, bilinear otherwise)."""
    if image.shape == (height, width):
        return image.astype(np.float32, copy=False)
    shrinking = height < image.shape[0] or width < image.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    pil = Image.fromarray(image.astype(np.float32), mode="F")
    return np.asarray(pil.resize((width, height), resample=resample), dtype=np.float32)


def unletterbox_probs(probs: np.ndarray, geom: LetterboxGeometry) -> np.ndarray:
    """Crop the canvas region and resize class probabilities back to the original size.

    Args:
        probs: (C, size, size) float probabilities on the model canvas.
        geom: geometry returned by :func:`letterbox`.

    Returns:
        (C, orig_h, orig_w) float32 probabilities (bilinear).
    """
    crop = probs[:, geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w]
    return np.stack([resize_float(c, geom.orig_h, geom.orig_w) for c in crop]).astype(np.float32)


def unletterbox_labels(labels: np.ndarray, geom: LetterboxGeometry) -> np.ndarray:
    """Crop and resize an integer label map back to the original size (nearest neighbour).

    Args:
        labels: (size, size) integer labels on the model canvas.
        geom: geometry returned by :func:`letterbox`.

    Returns:
        (orig_h, orig_w) uint8 labels.
    """
    crop = labels[geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w]
    pil = Image.fromarray(crop.astype(np.uint8))
    out = pil.resize((geom.orig_w, geom.orig_h), resample=Image.Resampling.NEAREST)
    return np.asarray(out, dtype=np.uint8)


def letterbox_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Place an (H, W) label map on the (size, size) canvas with nearest-neighbour resizing."""
    geom = letterbox_geometry(labels.shape[0], labels.shape[1], size)
    pil = Image.fromarray(labels.astype(np.uint8))
    resized = np.asarray(pil.resize((geom.new_w, geom.new_h), Image.Resampling.NEAREST))
    canvas = np.zeros((size, size), dtype=np.uint8)
    canvas[geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w] = resized
    return canvas


def prepare_image(
    image: np.ndarray,
    size: int,
    photometric: str = "MONOCHROME2",
    low_pct: float = 0.5,
    high_pct: float = 99.5,
) -> tuple[np.ndarray, LetterboxGeometry]:
    """Full preprocessing: grayscale, robust percentile window, letterbox (padding = 0).

    The percentiles come from the full-resolution image; the window is applied after the
    (area-averaging) resize, which is cheaper for large images.

    Args:
        image: raw image array, see :func:`to_grayscale`.
        size: model input side.
        photometric: DICOM Photometric Interpretation of ``image``.
        low_pct: lower normalisation percentile.
        high_pct: upper normalisation percentile.

    Returns:
        ((size, size) float32 canvas in [0, 1], geometry).

    Raises:
        BlankImageError: every pixel has the same value (a network would still draw lungs on it).
        ImageFormatError: the array is not a usable image.
    """
    gray = to_grayscale(image)
    lo, hi = intensity_window(gray, low_pct, high_pct)
    if hi - lo < 1e-6:
        raise BlankImageError(f"blank image: every pixel has the value {lo:.6g}")
    canvas, geom = letterbox(gray, size)
    window = apply_window(canvas, lo, hi, photometric)
    # Padding stays 0 (black) for MONOCHROME2 and MONOCHROME1 alike.
    pad = np.ones(canvas.shape, dtype=bool)
    pad[geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w] = False
    window[pad] = 0.0
    return window, geom
