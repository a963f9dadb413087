"""How well a reference's lung surface follows the image: a ceiling for HU-boundary methods.

For each lung of a labelled case, an oracle keeps the reference everywhere except within
``band_mm`` of its surface. Inside that band a voxel is lung when it is below an HU threshold
(holes filled per slice, as the model's refinement does). The best Dice over a sweep of
thresholds says how far the reference can be reproduced by a method that knows the lung's
interior exactly but puts its surface where the image does. When even this oracle stays under
a target, the shortfall is in where the contour was drawn (slice-to-slice inconsistency, a
margin drawn inside or outside the pleura), not in finding the lung.

Usage::

    python -m ml.experiments.ct_ceiling --manifest ../shared/data/ct/manifest.csv --split all --band-mm 1.5 2.5
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ml import metrics
from ml.ct.evaluation import SIDES, selected_records
from ml.ct.io import read_ct, read_label
from ml.ct.postprocess import bounding_box, fill_holes_per_slice

logger = logging.getLogger(__name__)

THRESHOLDS_HU = (-600.0, -500.0, -400.0, -300.0, -200.0, -100.0, 0.0)


def boundary_ceiling(
    volume_hu: np.ndarray,
    reference: np.ndarray,
    spacing: tuple[float, float, float],
    band_mm: float = 2.5,
    thresholds_hu: tuple[float, ...] = THRESHOLDS_HU,
    other: np.ndarray | None = None,
) -> dict[str, float]:
    """The best Dice of "reference interior + HU-thresholded surface band" for one lung.

    Args:
        volume_hu: ``(D, H, W)`` HU.
        reference: ``(D, H, W)`` boolean reference lung.
        spacing: ``(D, H, W)`` mm.
        band_mm: half-width of the band around the reference surface that is decided by HU.
        thresholds_hu: thresholds tried; a band voxel is lung when below the threshold.
        other: ``(D, H, W)`` boolean reference of the other lung, never given to this one.

    Returns:
        ``{"dice": best Dice, "threshold_hu": the threshold that reached it}``.

    Raises:
        ValueError: empty reference, or a band narrower than the in-plane voxel (it would hold
            no voxel and the "ceiling" would be the reference itself).
    """
    if band_mm < max(spacing[1], spacing[2]):
        raise ValueError(f"band_mm {band_mm} is narrower than the in-plane voxel "
                         f"({spacing[1]:.2f} x {spacing[2]:.2f} mm)")
    if not reference.any():
        raise ValueError("the reference lung is empty")
    margin = int(np.ceil(band_mm / min(spacing))) + 1
    box = bounding_box(reference, margin=margin)
    truth, hu = reference[box], volume_hu[box]
    inside = ndimage.distance_transform_edt(truth, sampling=spacing)
    outside = ndimage.distance_transform_edt(~truth, sampling=spacing)
    band = (inside <= band_mm) & truth | (outside <= band_mm) & ~truth
    foreign = other[box] if other is not None else np.zeros_like(truth)
    core = truth & ~band
    best = {"dice": -1.0, "threshold_hu": float("nan")}
    for threshold in thresholds_hu:
        oracle = fill_holes_per_slice(core | (band & (hu < threshold))) & ~foreign
        dice = metrics.dice(oracle, truth)
        if dice > best["dice"]:
            best = {"dice": float(dice), "threshold_hu": float(threshold)}
    return best


def case_ceilings(manifest: Path, split: str, bands_mm: list[float]) -> list[dict[str, Any]]:
    """:func:`boundary_ceiling` for every lung (or the whole lung without sides) of every case."""
    rows = []
    for record in selected_records(manifest, split):
        volume, meta = read_ct(record.ct)
        truth = read_label(record.labels, meta)
        lungs = {side: truth == value for side, value in SIDES.items()} if record.lr_labels else {"lung": truth > 0}
        for side, reference in lungs.items():
            for band in bands_mm:
                row = {"case": record.case, "lung": side, "band_mm": band}
                try:
                    found = boundary_ceiling(volume, reference, meta.spacing_dhw, band, other=(truth > 0) & ~reference)
                except ValueError as error:
                    rows.append({**row, "skipped": str(error)})
                    continue
                rows.append({**row, "dice": round(found["dice"], 4), "threshold_hu": found["threshold_hu"]})
                logger.info("%s %s band %.1f mm: ceiling %.4f at %.0f HU", record.case, side, band,
                            found["dice"], found["threshold_hu"])
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI: print one JSON object per case, lung and band."""
    parser = argparse.ArgumentParser(prog="python -m ml.experiments.ct_ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="CT manifest CSV")
    parser.add_argument("--split", default="all", help="train, val, test or all (default all)")
    parser.add_argument("--band-mm", type=float, nargs="+", default=[2.5],
                        help="half-widths of the surface band decided by HU (default 2.5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for row in case_ceilings(args.manifest, args.split, args.band_mm):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
