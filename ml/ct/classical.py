"""Classical CT lung segmentation: HU threshold, components, airway removal, right/left split.

Used as the fallback proposal method and as the baseline the learned model is compared with.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ml.ct.postprocess import body_mask, largest_components, postprocess_lungs

logger = logging.getLogger(__name__)

LUNG_THRESHOLD_HU = -400.0


def lung_air_mask(volume_hu: np.ndarray, threshold_hu: float = LUNG_THRESHOLD_HU) -> np.ndarray:
    """Air inside the body (lungs and airways) below ``threshold_hu``.

    Args:
        volume_hu: ``(D, H, W)`` HU.
        threshold_hu: lung/soft-tissue threshold in HU.

    Returns:
        ``(D, H, W)`` boolean.
    """
    body = body_mask(volume_hu)
    air = (volume_hu < threshold_hu) & body
    air = ndimage.binary_opening(air, iterations=1)
    # bowel gas and other small pockets: keep the large components only
    return largest_components(air, keep=3, min_voxels=max(1, air.size // 20000)) > 0


def segment_classical(
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float],
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    threshold_hu: float = LUNG_THRESHOLD_HU,
) -> np.ndarray:
    """Segment right and left lungs with the classical pipeline.

    Args:
        volume_hu: ``(D, H, W)`` HU in canonical orientation (see :mod:`ml.ct.io`).
        spacing: voxel spacing ``(D, H, W)`` in mm.
        direction: canonical direction cosines (9 floats, row-major).
        threshold_hu: lung/soft-tissue threshold in HU.

    Returns:
        ``(D, H, W)`` uint8: 0 background, 1 right lung, 2 left lung.
    """
    air = lung_air_mask(volume_hu, threshold_hu)
    return postprocess_lungs(air, volume_hu, spacing, direction)
