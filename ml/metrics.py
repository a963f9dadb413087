"""Segmentation metrics on N-dimensional arrays (2-D (H, W) and 3-D (D, H, W) alike).

Functional forms take two boolean masks (``pred``, ``target``) of the same shape and an
optional ``spacing`` (one value per axis, e.g. mm per pixel); distances are in pixels when
``spacing`` is None and in the spacing's unit otherwise. Conventions for empty masks:

* overlap metrics (Dice, IoU, precision, recall) are 1.0 when both masks are empty;
* surface distances (HD95, ASSD) are 0.0 when both are empty and the array's diagonal when
  exactly one is (:func:`missing_structure_distance`), so a missed structure stays in the mean.

:func:`per_label_metrics` evaluates every label of a label map plus their union, and
:class:`MetricTable` accumulates per-case rows and summarises them (mean, median, 5th
percentile, bootstrap confidence interval of the mean).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

Spacing = Sequence[float] | None


class ShapeMismatchError(ValueError):
    """Prediction and reference have different shapes."""


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred).astype(bool), np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise ShapeMismatchError(f"prediction shape {p.shape} != reference shape {t.shape}")
    return p, t


def _confusion(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int, int]:
    p, t = _pair(pred, target)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice = 2|P∩T| / (|P| + |T|); 1.0 when both are empty."""
    tp, fp, fn, _ = _confusion(pred, target)
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2 * tp / denom


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union (Jaccard); 1.0 when both are empty."""
    tp, fp, fn, _ = _confusion(pred, target)
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def pixel_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of pixels (voxels) where the masks agree."""
    tp, fp, fn, tn = _confusion(pred, target)
    return (tp + tn) / max(tp + fp + fn + tn, 1)


def precision(pred: np.ndarray, target: np.ndarray) -> float:
    """TP / (TP + FP); 1.0 when the prediction is empty and the reference too."""
    tp, fp, fn, _ = _confusion(pred, target)
    if tp + fp == 0:
        return 1.0 if fn == 0 else 0.0
    return tp / (tp + fp)


def recall(pred: np.ndarray, target: np.ndarray) -> float:
    """TP / (TP + FN) (sensitivity); 1.0 when the reference is empty and the prediction too."""
    tp, fp, fn, _ = _confusion(pred, target)
    if tp + fn == 0:
        return 1.0 if fp == 0 else 0.0
    return tp / (tp + fn)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a mask (mask minus its erosion, full connectivity)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing: Spacing = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each boundary point of one mask to the other mask's boundary.

    Returns:
        (distances pred→target, distances target→pred), 1-D arrays in pixels or spacing units.
        Both are empty when either mask is empty.
    """
    p, t = _pair(pred, target)
    if not p.any() or not t.any():
        return np.zeros(0), np.zeros(0)
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    if sampling is not None and len(sampling) != p.ndim:
        raise ShapeMismatchError(f"spacing {sampling} has {len(sampling)} values for a {p.ndim}-D mask")
    sp, st = _surface(p), _surface(t)
    dist_to_t = ndimage.distance_transform_edt(~st, sampling=sampling)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return dist_to_t[sp], dist_to_p[st]


def _hd95_of(a: np.ndarray, b: np.ndarray) -> float:
    return float(max(np.percentile(a, 95), np.percentile(b, 95)))


def _assd_of(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.sum() + b.sum()) / (a.size + b.size))


def missing_structure_distance(shape: tuple[int, ...], spacing: Spacing = None) -> float:
    """The distance charged when one mask is empty and the other is not: the array's diagonal.

    No surface distance can exceed it, so a missed (or invented) lung is never scored better
    than the worst drawn one, and means over cases keep every case.
    """
    sizes = np.asarray(shape, dtype=float) * (1.0 if spacing is None else np.asarray(spacing, dtype=float))
    return float(np.sqrt((sizes ** 2).sum()))


def _surface_metrics(pred: np.ndarray, target: np.ndarray, spacing: Spacing = None) -> tuple[float, float]:
    """``(hd95, assd)`` from one pass of surface distances: 0.0 when both masks are empty,
    :func:`missing_structure_distance` when exactly one is."""
    p, t = _pair(pred, target)
    if not p.any() and not t.any():
        return 0.0, 0.0
    a, b = surface_distances(p, t, spacing)
    if a.size == 0 or b.size == 0:
        penalty = missing_structure_distance(p.shape, spacing)
        return penalty, penalty
    return _hd95_of(a, b), _assd_of(a, b)


def hd95(pred: np.ndarray, target: np.ndarray, spacing: Spacing = None) -> float:
    """95th-percentile symmetric Hausdorff distance (max of the two directed 95th percentiles).

    Returns 0.0 when both masks are empty and the array's diagonal
    (:func:`missing_structure_distance`) when exactly one is.
    """
    return _surface_metrics(pred, target, spacing)[0]


def assd(pred: np.ndarray, target: np.ndarray, spacing: Spacing = None) -> float:
    """Average symmetric surface distance (mean over both boundaries' distances).

    Returns 0.0 when both masks are empty and the array's diagonal when exactly one is.
    """
    return _surface_metrics(pred, target, spacing)[1]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively, so
    that ``json.dumps(..., allow_nan=False)`` writes strict JSON (``null`` instead of ``NaN``)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as strict, indented JSON (non-finite numbers as ``null``, see :func:`json_safe`)."""
    Path(path).write_text(json.dumps(json_safe(value), indent=2, allow_nan=False, default=float) + "\n")


def binary_metrics(pred: np.ndarray, target: np.ndarray, spacing: Spacing = None, surface: bool = True) -> dict[str, float]:
    """All metrics for one pair of boolean masks (surface distances in pixels and, with spacing, mm)."""
    out = {
        "dice": dice(pred, target),
        "iou": iou(pred, target),
        "pixel_accuracy": pixel_accuracy(pred, target),
        "precision": precision(pred, target),
        "recall": recall(pred, target),
    }
    if surface:
        out["hd95"], out["assd"] = _surface_metrics(pred, target)
        if spacing is not None:
            out["hd95_mm"], out["assd_mm"] = _surface_metrics(pred, target, spacing)
    return out


def per_label_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    labels: Mapping[int, str],
    spacing: Spacing = None,
    union_name: str | None = "lungs",
    surface: bool = True,
) -> dict[str, float]:
    """Metrics for each label of two integer label maps, plus the union of all labels.

    Args:
        pred: (H, W) or (D, H, W) integer labels.
        target: reference labels of the same shape.
        labels: label value → name, e.g. ``{1: "right_lung", 2: "left_lung"}``.
        spacing: pixel/voxel size per axis (e.g. mm); adds ``*_mm`` distances.
        union_name: name of the union entry (``None`` to skip it).
        surface: compute HD95/ASSD (slower).

    Returns:
        Flat dict ``{"<name>_<metric>": value}``, plus ``<name>_area_px`` (and ``_area_mm2`` /
        ``_volume_mm3`` with spacing) for prediction and reference.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ShapeMismatchError(f"prediction shape {pred.shape} != reference shape {target.shape}")
    groups: dict[str, tuple[np.ndarray, np.ndarray]] = {
        name: (pred == value, target == value) for value, name in labels.items()
    }
    if union_name:
        values = list(labels)
        groups[union_name] = (np.isin(pred, values), np.isin(target, values))
    unit = None if spacing is None else float(np.prod(spacing))
    out: dict[str, float] = {}
    for name, (p, t) in groups.items():
        for key, value in binary_metrics(p, t, spacing, surface).items():
            out[f"{name}_{key}"] = value
        out[f"{name}_area_px"] = float(np.count_nonzero(p))
        out[f"{name}_ref_area_px"] = float(np.count_nonzero(t))
        if unit is not None:
            tag = "area_mm2" if pred.ndim == 2 else "volume_mm3"
            out[f"{name}_{tag}"] = float(np.count_nonzero(p)) * unit
    return out


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (ignoring NaNs)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    return float(np.percentile(means, 100 * alpha / 2)), float(np.percentile(means, 100 * (1 - alpha / 2)))


def summarize(values: Sequence[float], ci: bool = True) -> dict[str, float]:
    """Mean, median, 5th percentile, std, min (NaNs ignored) and a 95 % bootstrap CI of the mean."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return {"mean": math.nan, "median": math.nan, "p05": math.nan, "std": math.nan, "min": math.nan, "n": 0}
    out = {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p05": float(np.percentile(arr, 5)),
        "std": float(arr.std()),
        "min": float(arr.min()),
        "n": int(arr.size),
    }
    if ci:
        out["ci95_low"], out["ci95_high"] = bootstrap_ci(arr)
    return out


class MetricTable:
    """Accumulates one row of metrics per case and writes ``per_case.csv`` and a summary."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        """Append one case (identifier columns and numeric metric columns)."""
        self.rows.append(dict(row))

    def numeric_columns(self) -> list[str]:
        if not self.rows:
            return []
        return [k for k, v in self.rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per metric column: mean, median, p05, std, min, n, ci95_low, ci95_high."""
        return {col: summarize([float(r[col]) for r in self.rows]) for col in self.numeric_columns()}

    def write_csv(self, path: Path) -> None:
        """Write all rows (union of keys, in first-seen order)."""
        keys: list[str] = []
        for row in self.rows:
            keys.extend(k for k in row if k not in keys)
        with Path(path).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by :meth:`MetricTable.write_csv` (e.g. ``per_case.csv``), values as written."""
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))
