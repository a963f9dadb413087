"""Evaluate a chest X-ray model on a manifest split at each image's native resolution.

Writes ``per_case.csv`` (one row per image: per-lung and both-lung metrics, areas, whether
right/left are on the correct sides) and ``summary.json``. The case-level Dice / IoU / HD95 /
ASSD is the MEAN OVER THE TWO LUNGS (right and left scored separately, so a side swap scores
0); ``lungs_*`` columns score the union of both lungs; pixel accuracy is over the 3-class map.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ml.cxr.data import ManifestError, load_image, load_labels, read_manifest
from ml.cxr.inference import CXRPredictor
from ml.metrics import MetricTable, dice, per_label_metrics, summarize, write_json

logger = logging.getLogger(__name__)

LUNGS = {1: "right_lung", 2: "left_lung"}


def sides_correct(pred: np.ndarray, target: np.ndarray) -> bool:
    """True when the predicted right/left labels overlap the reference better than swapped."""
    straight = dice(pred == 1, target == 1) + dice(pred == 2, target == 2)
    swapped = dice(pred == 1, target == 2) + dice(pred == 2, target == 1)
    return straight > swapped


def case_metrics(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] | None = None,
                 lr_labels: bool = True) -> dict[str, float]:
    """Per-lung, both-lung and case-level metrics of one (H, W) label map against its reference.

    When the reference has no right/left split (``lr_labels`` False) both maps are binarised
    and the case-level values are those of the union.
    """
    keys = ("dice", "iou", "hd95", "assd", "precision", "recall") + (("hd95_mm", "assd_mm") if spacing else ())
    if not lr_labels:
        pred, target = (pred > 0).astype(np.uint8), (target > 0).astype(np.uint8)
        row = per_label_metrics(pred, target, {1: "lungs"}, spacing, union_name=None)
        row.update({k: row[f"lungs_{k}"] for k in keys})
    else:
        row = per_label_metrics(pred, target, LUNGS, spacing, union_name="lungs")
        for key in keys:
            row[key] = float(np.mean([row[f"right_lung_{key}"], row[f"left_lung_{key}"]]))
        row["sides_correct"] = float(sides_correct(pred, target))
    row["pixel_accuracy"] = float(np.mean(pred == target))
    return row


def summarize_table(table: MetricTable) -> dict[str, Any]:
    """Flat headline keys (dice_mean, dice_median, dice_p05, ...) plus full per-column stats."""
    stats = table.summary()
    out: dict[str, Any] = {"n_cases": len(table.rows)}
    for key in ("dice", "iou", "pixel_accuracy", "hd95", "assd", "precision", "recall", "hd95_mm", "assd_mm",
                "right_lung_dice", "left_lung_dice", "lungs_dice", "right_lung_hd95", "left_lung_hd95"):
        if key in stats:
            s = stats[key]
            out[f"{key}_mean"], out[f"{key}_median"], out[f"{key}_p05"] = s["mean"], s["median"], s["p05"]
            out[f"{key}_ci95"] = [s.get("ci95_low", math.nan), s.get("ci95_high", math.nan)]
    if "sides_correct" in stats:
        out["sides_correct_fraction"] = stats["sides_correct"]["mean"]
    by_dataset: dict[str, list[float]] = {}
    for row in table.rows:
        by_dataset.setdefault(str(row["dataset"]), []).append(float(row["dice"]))
    out["dice_by_dataset"] = {k: summarize(v, ci=False) for k, v in by_dataset.items()}
    out["columns"] = stats
    return out


def evaluate_predictor(predictor: CXRPredictor | Any, cases: Iterable[Any], out_dir: Path | None = None,
                       progress: bool = False) -> dict[str, Any]:
    """Run ``predictor`` on every case, score it, and optionally write the results.

    Args:
        predictor: loaded model.
        cases: :class:`ml.cxr.data.Case` items.
        out_dir: folder for ``per_case.csv`` and ``summary.json`` (not written when None).
        progress: show a progress bar.

    Returns:
        The summary dict.
    """
    cases = list(cases)
    iterator: Iterable[Any] = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="evaluate", unit="img")
    table = MetricTable()
    for case in iterator:
        image, target = load_image(case.image_path), load_labels(case.label_path)
        if image.shape[:2] != target.shape:
            raise ManifestError(f"{case.dataset}/{case.case}: label {case.label_path.name} is "
                                f"{target.shape[1]}x{target.shape[0]} px but its image is "
                                f"{image.shape[1]}x{image.shape[0]} px")
        result = predictor.predict(image)
        row: dict[str, Any] = {"dataset": case.dataset, "case": case.case, "category": case.category,
                               "height": target.shape[0], "width": target.shape[1]}
        row.update(case_metrics(result.labels, target, spacing=case.spacing_mm,
                                lr_labels=case.lr_labels))
        row["confidence"] = result.confidence
        row["model_ms"] = result.timings_ms["model"]
        table.add(row)
    summary = summarize_table(table)
    summary["model"] = predictor.card.name if hasattr(predictor, "card") else getattr(predictor, "name", "")
    summary["tta_flip"] = predictor.tta_flip
    summary["postprocessing"] = predictor.post.to_dict()
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        table.write_csv(out_dir / "per_case.csv")
        write_json(out_dir / "summary.json", summary)
    logger.info("%s on %d cases: Dice mean %.4f median %.4f p05 %.4f", summary["model"],
                summary["n_cases"], summary["dice_mean"], summary["dice_median"], summary["dice_p05"])
    return summary


def evaluate_model(model: str, manifest: Path, split: str, out_dir: Path, progress: bool = False,
                   **predictor_kwargs: Any) -> dict[str, Any]:
    """Evaluate a registered model (name, alias or weights path) on one manifest split."""
    cases = read_manifest(manifest, [split])
    missing = [path for case in cases for path in (case.image_path, case.label_path) if not Path(path).is_file()]
    if missing:  # found before any case is scored, not after an hour of them
        shown = ", ".join(str(path) for path in missing[:3])
        raise ManifestError(f"{len(missing)} file(s) of split {split!r} missing, e.g. {shown}")
    predictor = CXRPredictor.from_registry(model, **predictor_kwargs)
    summary = evaluate_predictor(predictor, cases, out_dir, progress)
    summary["split"] = split
    summary["manifest"] = str(manifest)
    write_json(Path(out_dir) / "summary.json", summary)
    return summary
