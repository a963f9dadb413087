"""Evaluation of CT lung segmentation against a manifest: per-case metrics and a summary.

Cases a model was trained on are evaluated with its leave-one-case-out fold model (a card whose
``training.loco_of`` names the model and whose ``training.excluded_cases`` lists the case) when
one is shipped; the ``evaluated_with`` column says which model produced each row, and
``trained_on_case`` flags rows where no such fold exists.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ml import metrics
from ml.ct.data import CaseRecord, read_manifest
from ml.ct.inference import CTResult
from ml.ct.io import read_ct, read_label

logger = logging.getLogger(__name__)

Segmenter = Callable[[np.ndarray, tuple[float, float, float], tuple[float, ...]], CTResult]
SIDES = {"right": 1, "left": 2}
COLUMNS = [
    "case", "split", "lr_labels", "evaluated_with", "trained_on_case",
    "dice_right", "dice_left", "dice_lung", "hd95_right_mm", "hd95_left_mm", "hd95_lung_mm",
    "volume_true_right_ml", "volume_pred_right_ml", "volume_error_right_pct",
    "volume_true_left_ml", "volume_pred_left_ml", "volume_error_left_pct",
    "volume_error_lung_pct", "seconds",
]


def case_metrics(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float], lr_labels: bool) -> dict[str, float]:
    """Dice, HD95 (mm) and signed volume error (%) per lung and for both lungs together.

    Args:
        prediction: ``(D, H, W)`` uint8 labels (1 right, 2 left).
        truth: ``(D, H, W)`` uint8 reference; when ``lr_labels`` is False, 1 means lung.
        spacing: ``(D, H, W)`` mm.
        lr_labels: the reference splits right and left.

    Returns:
        Flat dict of metrics (NaN where the reference has no side split).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    row: dict[str, float] = {}
    pairs = {"lung": (prediction > 0, truth > 0)}
    if lr_labels:
        pairs.update({side: (prediction == value, truth == value) for side, value in SIDES.items()})
    for side in ("right", "left", "lung"):
        if side not in pairs:
            row.update({f"dice_{side}": math.nan, f"hd95_{side}_mm": math.nan})
            if side != "lung":
                row.update({f"volume_true_{side}_ml": math.nan, f"volume_pred_{side}_ml": math.nan,
                            f"volume_error_{side}_pct": math.nan})
            continue
        pred, true = pairs[side]
        box = _union_box(pred, true)
        row[f"dice_{side}"] = metrics.dice(pred, true)
        if pred.any() != true.any():  # a missed or invented lung: the whole volume's diagonal, not the box's
            row[f"hd95_{side}_mm"] = metrics.missing_structure_distance(pred.shape, spacing)
        else:
            row[f"hd95_{side}_mm"] = metrics.hd95(pred[box], true[box], spacing)
        true_ml, pred_ml = float(true.sum()) * voxel_ml, float(pred.sum()) * voxel_ml
        error = (pred_ml - true_ml) / true_ml * 100.0 if true_ml else math.nan
        if side == "lung":
            row["volume_error_lung_pct"] = error
        else:
            row.update({f"volume_true_{side}_ml": true_ml, f"volume_pred_{side}_ml": pred_ml,
                        f"volume_error_{side}_pct": error})
    return row


def _union_box(a: np.ndarray, b: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    union = a | b
    if not union.any():
        return tuple(slice(None) for _ in a.shape)
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(0, hits[0] - margin), hits[-1] + margin + 1))
    return tuple(box)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over cases (NaN-aware): per-lung Dice/HD95, signed volume error over lungs."""
    def mean(values: list[float]) -> float:
        finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return round(float(np.mean(finite)), 4) if finite else math.nan

    def per_case(row: dict[str, Any], key: str) -> float:
        """Mean over the two lungs, or the whole-lung value when the reference has no sides."""
        suffix = "_mm" if key == "hd95" else ""
        sided = [row[f"{key}_right{suffix}"], row[f"{key}_left{suffix}"]]
        finite = [v for v in sided if math.isfinite(v)]
        return float(np.mean(finite)) if finite else row[f"{key}_lung{suffix}"]

    volume_errors = [r[f"volume_error_{s}_pct"] for r in rows for s in SIDES]
    volume_errors += [r["volume_error_lung_pct"] for r in rows if not r["lr_labels"]]
    return {
        "n_cases": len(rows),
        "dice_right_mean": mean([r["dice_right"] for r in rows]),
        "dice_left_mean": mean([r["dice_left"] for r in rows]),
        "dice_lung_mean": mean([r["dice_lung"] for r in rows]),
        "dice_mean": mean([per_case(r, "dice") for r in rows]),
        "hd95_mm_mean": mean([per_case(r, "hd95") for r in rows]),
        "volume_error_pct_mean": mean(volume_errors),
        "abs_volume_error_pct_mean": mean([abs(v) for v in volume_errors if math.isfinite(v)]),
        "n_cases_with_sides": sum(1 for r in rows if r["lr_labels"]),
        "n_cases_loco": sum(1 for r in rows if "loco" in str(r["evaluated_with"])),
        "n_cases_trained_on": sum(1 for r in rows if r["trained_on_case"]),
    }


def evaluate_cases(
    records: list[CaseRecord],
    choose: Callable[[CaseRecord], tuple[str, Segmenter, bool]],
    out_dir: Path,
) -> dict[str, Any]:
    """Segment every case, write ``per_case.csv`` and ``summary.json`` in ``out_dir``.

    Args:
        records: labelled manifest rows.
        choose: for a case, ``(model label, segmenter, trained_on_case)``.
        out_dir: output folder (created).

    Returns:
        The summary dict.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for record in records:
        if record.labels is None:
            logger.info("skipping unlabelled case %s", record.case)
            continue
        volume, meta = read_ct(record.ct)
        truth = read_label(record.labels, meta)
        label, segment, trained_on = choose(record)
        start = time.perf_counter()
        result = segment(volume, meta.spacing_dhw, meta.direction)
        seconds = time.perf_counter() - start
        row = {"case": record.case, "split": record.split, "lr_labels": int(record.lr_labels),
               "evaluated_with": label, "trained_on_case": int(trained_on), "seconds": round(seconds, 2)}
        row.update(case_metrics(result.labels, truth, meta.spacing_dhw, record.lr_labels))
        logger.info("%s (%s): dice lung %.4f right %.4f left %.4f", record.case, label,
                    row["dice_lung"], row["dice_right"], row["dice_left"])
        rows.append(row)
    _write_rows(rows, out_dir / "per_case.csv")
    summary = summarise(rows)
    metrics.write_json(out_dir / "summary.json", summary)
    return summary


def _write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})


def selected_records(manifest: Path, split: str) -> list[CaseRecord]:
    """Labelled rows of ``manifest`` in ``split`` (``all`` for every split)."""
    return [r for r in read_manifest(manifest, split) if r.labels is not None]
