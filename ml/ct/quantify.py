"""Lung quantification from CT labels: volumes (mL), mean HU, emphysema index (LAA%-950)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ml.ct.gas import GAS_HU, find_gas_pockets

EMPHYSEMA_THRESHOLD_HU = -950.0


@dataclass(frozen=True)
class LungMeasures:
    """Measures of one lung (or both lungs together).

    Attributes:
        volume_ml: volume in mL.
        mean_hu: mean attenuation in HU (NaN when empty).
        emphysema_index: fraction (0–1) of lung voxels below −950 HU (NaN when empty).
    """

    volume_ml: float
    mean_hu: float
    emphysema_index: float


def measure(mask: np.ndarray, volume_hu: np.ndarray, voxel_ml: float) -> LungMeasures:
    """Volume, mean HU and emphysema index of one boolean ``(D, H, W)`` mask."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return LungMeasures(0.0, float("nan"), float("nan"))
    values = volume_hu[mask]
    return LungMeasures(
        volume_ml=count * voxel_ml,
        mean_hu=float(values.mean(dtype=np.float64)),
        emphysema_index=float(np.count_nonzero(values < EMPHYSEMA_THRESHOLD_HU)) / count,
    )


def quantify_lungs(
    labels: np.ndarray, volume_hu: np.ndarray, spacing: tuple[float, float, float]
) -> dict[str, float]:
    """Per-lung and total measures (one pass over the volume per measure).

    Args:
        labels: ``(D, H, W)`` uint8, 1 = right lung, 2 = left lung.
        volume_hu: ``(D, H, W)`` HU on the same grid.
        spacing: voxel spacing in mm (any axis order).

    Returns:
        Flat dict: ``right_volume_ml``, ``left_volume_ml``, ``total_volume_ml``,
        ``right_mean_hu``, ``left_mean_hu``, ``total_mean_hu``, ``right_emphysema_index``,
        ``left_emphysema_index``, ``total_emphysema_index`` (fractions of voxels < −950 HU).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    inside = labels > 0  # gather the lung voxels once: lungs are a small part of the volume
    flat, hu = labels[inside], volume_hu[inside]
    counts = np.bincount(flat, minlength=3)[:3].astype(np.float64)
    sums = np.bincount(flat, weights=hu, minlength=3)[:3]
    low = np.bincount(flat[hu < EMPHYSEMA_THRESHOLD_HU], minlength=3)[:3].astype(np.float64)
    rows = {"right": (counts[1], sums[1], low[1]), "left": (counts[2], sums[2], low[2]),
            "total": (counts[1:].sum(), sums[1:].sum(), low[1:].sum())}
    out: dict[str, float] = {}
    for name, (count, total_hu, below) in rows.items():
        m = LungMeasures(count * voxel_ml, total_hu / count, below / count) if count else \
            LungMeasures(0.0, float("nan"), float("nan"))
        out.update({f"{name}_{key}": round(float(value), 4) for key, value in asdict(m).items()})
    return out


def coverage_warnings(
    labels: np.ndarray,
    volume_hu: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> list[str]:
    """Reasons the volumes may be wrong, each saying which way: over- or underestimated.

    - a lung missing;
    - a lung cut by the scan's first (most inferior) or last (most superior) slice: the scan
      does not cover all of it, so its volume is underestimated;
    - with ``volume_hu`` and ``spacing``: gas below the diaphragm inside a lung
      (:func:`ml.ct.gas.find_gas_pockets`): its volume and emphysema index are overestimated.
      Such gas reaching an end slice is not lung cut by the scan, so it raises no "underestimated"
      warning; only lung beyond the gas on that slice does.

    Args:
        labels: ``(D, H, W)`` uint8, 1 = right lung, 2 = left lung.
        volume_hu: ``(D, H, W)`` HU on the same grid (optional).
        spacing: ``(D, H, W)`` mm (needed with ``volume_hu``).
    """
    gas = beside_gas = np.zeros(labels.shape, dtype=bool)
    if volume_hu is not None and spacing is not None:  # issue 24: gas below the base makes an overestimate
        gas = _gas_at_model_resolution(labels, volume_hu, spacing)
        beside_gas = ndimage.binary_dilation(gas, structure=np.ones((3, 3, 3), dtype=bool)) if gas.any() else gas
    voxel_ml = float(np.prod(spacing)) / 1000.0 if spacing is not None else 0.0
    warnings = []
    for value, name in ((1, "right"), (2, "left")):
        lung = labels == value
        slices = np.flatnonzero((lung & ~beside_gas).any(axis=(1, 2)))  # the gas and its rim are not cut lung
        if not lung.any():
            warnings.append(f"no {name} lung found: its volume is 0 mL and its mean HU and emphysema index are null")
            continue
        gas_ml = float(np.count_nonzero(lung & gas)) * voxel_ml
        if gas_ml > 0.0:
            warnings.append(f"the {name} lung holds {gas_ml:.1f} mL of gas below its base (stomach or bowel under "
                            f"the diaphragm): its volume and emphysema index are overestimated")
        if slices.size == 0:
            continue
        ends = [end for end, hit in (("first", slices[0] == 0), ("last", slices[-1] == labels.shape[0] - 1)) if hit]
        if ends:
            warnings.append(f"the {name} lung reaches the {' and '.join(ends)} slice of the scan: the scan may "
                            f"not cover the whole lung, and its volume may be underestimated")
    return warnings


def _gas_at_model_resolution(
    labels: np.ndarray, volume_hu: np.ndarray, spacing: tuple[float, float, float], grid_mm: float = 2.0
) -> np.ndarray:
    """Subdiaphragmatic gas (:func:`ml.ct.gas.find_gas_pockets`) judged on every k-th row and column.

    The in-plane step k brings the voxels to about ``grid_mm`` (the model grid's size, where the
    rules were set), and keeps the warning cheap on 0.7 mm scans; the result is spread back to
    the input grid and kept to its lung voxels.

    Returns:
        ``(D, H, W)`` boolean on the grid of ``labels``.
    """
    step = max(1, int(grid_mm // min(float(spacing[1]), float(spacing[2]))))
    if step == 1:
        return find_gas_pockets(labels, volume_hu, spacing)[1]
    coarse = (slice(None), slice(None, None, step), slice(None, None, step))
    found = find_gas_pockets(labels[coarse], volume_hu[coarse], (spacing[0], spacing[1] * step, spacing[2] * step))[1]
    spread = np.repeat(np.repeat(found, step, axis=1), step, axis=2)[:, : labels.shape[1], : labels.shape[2]]
    return spread & (labels > 0) & (volume_hu < GAS_HU)
