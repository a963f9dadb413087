"""Post-processing of lung label maps (2-D (H, W) or 3-D (D, H, W)); every step switchable.

Steps, in order: keep the largest connected component per lung, remove specks (components
smaller than a fraction of the lung), fill holes, smooth boundaries, and make sure label 1
(patient's right lung) lies on the image's left of label 2 on a PA/AP radiograph.
:func:`postprocess` is the functional form; :class:`PostProcessor` keeps the settings.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

RIGHT_LUNG = 1
LEFT_LUNG = 2


@dataclass
class PostprocessConfig:
    """Which post-processing steps run, and their sizes.

    Attributes:
        keep_largest: keep only the largest connected component of each lung label.
        remove_specks: drop components smaller than ``min_component_frac`` of the label's total
            (runs before ``keep_largest``; it matters when ``keep_largest`` is off, e.g. for a
            lung cut in two by a dense opacity).
        min_component_frac: speck threshold as a fraction of the label's area.
        fill_holes: fill enclosed holes in each label.
        smooth: Gaussian-smooth each label's mask and re-threshold at 0.5.
        smooth_sigma_frac: smoothing sigma as a fraction of the image's shorter side.
        fix_sides: swap labels when the "right lung" lies right of the "left lung" in the image
            (2-D only; assumes a PA/AP view with the patient's right on the image's left).
    """

    keep_largest: bool = True
    remove_specks: bool = True
    min_component_frac: float = 0.05
    fill_holes: bool = True
    smooth: bool = False
    smooth_sigma_frac: float = 0.004
    fix_sides: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> PostprocessConfig:
        """Build from a mapping; unknown keys raise ``ValueError``."""
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown post-processing option(s): {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _structure(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, 1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest face-connected component of a boolean mask (empty stays empty)."""
    lab, n = ndimage.label(mask, structure=_structure(mask.ndim))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def remove_small_components(mask: np.ndarray, min_frac: float) -> np.ndarray:
    """Drop components whose size is below ``min_frac`` of the mask's total size; the largest
    component always stays (a lung broken into many small pieces is not a speck)."""
    lab, n = ndimage.label(mask, structure=_structure(mask.ndim))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = sizes >= min_frac * sizes.sum()
    keep[int(sizes.argmax())] = True
    keep[0] = False
    return keep[lab]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes (slice by slice for 3-D so that open airways stay open)."""
    if mask.ndim == 3:
        return np.stack([ndimage.binary_fill_holes(s) for s in mask])
    return ndimage.binary_fill_holes(mask)


def smooth_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth a boolean mask and threshold at 0.5 (rounds jagged borders)."""
    if sigma <= 0 or not mask.any():
        return mask.astype(bool)
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma) >= 0.5


def fix_sides(labels: np.ndarray) -> np.ndarray:
    """Swap right/left labels of a 2-D PA/AP map when their centroids are in the wrong order.

    The patient's right lung (label 1) appears on the image's LEFT; if the centroid of label 1
    is to the right of label 2's centroid the labels are swapped.
    """
    if labels.ndim != 2:
        return labels
    right, left = labels == RIGHT_LUNG, labels == LEFT_LUNG
    if not right.any() or not left.any():
        return labels
    cx_right = np.nonzero(right)[1].mean()
    cx_left = np.nonzero(left)[1].mean()
    if cx_right <= cx_left:
        return labels
    logger.warning("right/left lung labels were on the wrong sides; swapped")
    out = labels.copy()
    out[right], out[left] = LEFT_LUNG, RIGHT_LUNG
    return out


def postprocess(labels: np.ndarray, config: PostprocessConfig | None = None, lung_labels: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Clean a lung label map.

    Args:
        labels: (H, W) or (D, H, W) integer labels (0 background).
        config: which steps to run (defaults: largest component, specks, holes, sides).
        lung_labels: label values processed independently.

    Returns:
        Cleaned labels, same shape, uint8.
    """
    cfg = config or PostprocessConfig()
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.uint8)
    sigma = cfg.smooth_sigma_frac * min(labels.shape[-2:])
    for value in lung_labels:
        mask = labels == value
        if cfg.remove_specks:
            mask = remove_small_components(mask, cfg.min_component_frac)
        if cfg.keep_largest:  # leaves no specks either
            mask = largest_component(mask)
        if cfg.fill_holes:
            mask = fill_holes(mask)
        if cfg.smooth:
            mask = smooth_mask(mask, sigma)
        out[mask & (out == 0)] = value
    return fix_sides(out) if cfg.fix_sides else out


class PostProcessor:
    """Stateful wrapper: ``PostProcessor(cfg)(labels)``."""

    def __init__(self, config: PostprocessConfig | None = None) -> None:
        self.config = config or PostprocessConfig()

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        return postprocess(labels, self.config)
