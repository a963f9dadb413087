"""From a canonical CT volume to the 2D model grid and back.

The model works on axial slices: the body's bounding box (one square box for the whole volume)
is cropped and resized to ``size × size``; HU are windowed to ``[-1, 1]``; the slices above and
below are stacked as extra channels. Predictions are resized back into the box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

logger = logging.getLogger(__name__)

HU_WINDOW = (-1000.0, 400.0)
_BODY_THRESHOLD_HU = -500.0
_BOX_MARGIN = 0.04


@dataclass(frozen=True)
class Box:
    """A square in-plane crop ``[y0:y1, x0:x1]`` (may extend past the image; padded with air)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def side(self) -> int:
        return self.y1 - self.y0


def body_box(volume_hu: np.ndarray, step: int = 4) -> Box:
    """Square in-plane bounding box of the body over all slices, with a small margin.

    Args:
        volume_hu: ``(D, H, W)`` HU.
        step: subsampling step used to find the box quickly.

    Returns:
        A square :class:`Box` in voxel indices of ``(H, W)``.
    """
    depth, height, width = volume_hu.shape
    coarse = volume_hu[:: max(1, depth // 32), ::step, ::step] > _BODY_THRESHOLD_HU
    labels, count = ndimage.label(coarse)
    if count == 0:
        return _square(0, height, 0, width)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    ys, xs = np.nonzero((labels == int(np.argmax(sizes))).any(axis=0))
    y0, y1 = ys.min() * step, min(height, (ys.max() + 1) * step)
    x0, x1 = xs.min() * step, min(width, (xs.max() + 1) * step)
    return _square(y0, y1, x0, x1)


def _square(y0: int, y1: int, x0: int, x1: int) -> Box:
    side = int(round(max(y1 - y0, x1 - x0) * (1.0 + 2 * _BOX_MARGIN)))
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    return Box(cy - side // 2, cy - side // 2 + side, cx - side // 2, cx - side // 2 + side)


def crop(volume: np.ndarray, box: Box, fill: float) -> np.ndarray:
    """Crop ``(D, H, W)`` to ``(D, side, side)``, padding with ``fill`` outside the image."""
    depth, height, width = volume.shape
    out = np.full((depth, box.side, box.side), fill, dtype=volume.dtype)
    sy0, sy1 = max(box.y0, 0), min(box.y1, height)
    sx0, sx1 = max(box.x0, 0), min(box.x1, width)
    out[:, sy0 - box.y0 : sy1 - box.y0, sx0 - box.x0 : sx1 - box.x0] = volume[:, sy0:sy1, sx0:sx1]
    return out


def uncrop(cropped: np.ndarray, box: Box, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`crop`: paste ``(D, side, side)`` into a zero ``shape`` volume."""
    _, height, width = shape
    out = np.zeros(shape, dtype=cropped.dtype)
    sy0, sy1 = max(box.y0, 0), min(box.y1, height)
    sx0, sx1 = max(box.x0, 0), min(box.x1, width)
    out[:, sy0:sy1, sx0:sx1] = cropped[:, sy0 - box.y0 : sy1 - box.y0, sx0 - box.x0 : sx1 - box.x0]
    return out


def resize_slices(volume: np.ndarray, size: int, mode: str = "area", chunk: int = 64) -> np.ndarray:
    """Resize every axial slice of ``(D, h, w)`` float32 to ``(D, size, size)``."""
    if volume.shape[1:] == (size, size):
        return volume.astype(np.float32, copy=False)
    out = np.empty((volume.shape[0], size, size), dtype=np.float32)
    kwargs = {} if mode in ("area", "nearest") else {"align_corners": False}
    for start in range(0, volume.shape[0], chunk):
        block = torch.from_numpy(np.ascontiguousarray(volume[start : start + chunk], dtype=np.float32))
        block = F.interpolate(block[:, None], size=(size, size), mode=mode, **kwargs)[:, 0]
        out[start : start + chunk] = block.numpy()
    return out


def window(volume_hu: np.ndarray) -> np.ndarray:
    """Map HU to ``[-1, 1]`` over :data:`HU_WINDOW` (clipped), float32."""
    low, high = HU_WINDOW
    out = np.clip(volume_hu, low, high).astype(np.float32, copy=False)
    out = (out - low) * (2.0 / (high - low)) - 1.0
    return out


def stack_neighbours(slices: np.ndarray, index: int, context: int) -> np.ndarray:
    """Channels ``index-context .. index+context`` of ``(D, S, S)`` (edge slices repeated)."""
    depth = slices.shape[0]
    indices = np.clip(np.arange(index - context, index + context + 1), 0, depth - 1)
    return slices[indices]


def z_factor(spacing_z: float, target_mm: float = 3.0) -> int:
    """Integer slice-averaging factor bringing thin slices near ``target_mm`` (1 for thick ones)."""
    return max(1, int(round(target_mm / spacing_z)))


def pool_slices(block: np.ndarray, factor: int) -> np.ndarray:
    """Average groups of ``factor`` consecutive slices of ``(d, h, w)`` (last group padded by repetition)."""
    if factor == 1:
        return block
    pad = (-block.shape[0]) % factor
    if pad:
        block = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)])
    return block.reshape(-1, factor, *block.shape[1:]).mean(axis=1, dtype=np.float32)


def to_model_grid(
    volume_hu: np.ndarray, size: int, factor: int = 1, chunk: int = 32
) -> tuple[np.ndarray, np.ndarray, Box]:
    """Crop the body box, average thin slices by ``factor`` and resize slices to the model grid.

    Args:
        volume_hu: ``(D, H, W)`` HU, canonical orientation.
        size: model input side in pixels.
        factor: slices averaged into one model slice (see :func:`z_factor`).
        chunk: model slices processed at once (bounds memory).

    Returns:
        ``(image, hu_small, box)``: ``image`` ``(ceil(D / factor), size, size)`` windowed to
        [-1, 1]; ``hu_small`` the same in HU (for post-processing); ``box`` the crop.
    """
    box = body_box(volume_hu)
    depth = volume_hu.shape[0]
    hu_small = np.empty((-(-depth // factor), size, size), dtype=np.float32)
    for start in range(0, depth, chunk * factor):
        block = pool_slices(crop(volume_hu[start : start + chunk * factor], box, fill=-1024.0), factor)
        hu_small[start // factor : start // factor + len(block)] = resize_slices(block, size, mode="area")
    return window(hu_small), hu_small, box


def small_grid_spacing(
    spacing: tuple[float, float, float], box: Box, size: int, factor: int = 1
) -> tuple[float, float, float]:
    """Spacing ``(D, H, W)`` in mm of the model grid for a crop ``box`` resized to ``size``."""
    scale = box.side / size
    return (spacing[0] * factor, spacing[1] * scale, spacing[2] * scale)
