"""Gas inside the predicted lungs of every CT in a data folder (``python -m ml.ct.gas_report``).

For each CT volume (the manifest's cases and every DICOM series under ``dicom/``) the model
segments the lungs; the report gives each lung's volume, its gas (voxels below −950 HU) and the
part of that gas :mod:`ml.ct.gas` finds below the diaphragm, and whether the field of view
shows gas below the lung bases at all (stomach, colon: a gas pocket of at least 1 mL inside the
body, below the bases). Labelled cases also get the gas inside their reference masks.

    python -m ml.ct.gas_report --data ../shared/data/ct --out runs/ct_gas/report.json
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ml.ct.gas import GAS_HU, gas_in_lungs_ml
from ml.ct.inference import CTPredictor
from ml.ct.io import read_ct, read_label
from ml.ct.postprocess import below_lung_base, body_mask
from ml.metrics import write_json

logger = logging.getLogger(__name__)


def gas_below_bases_in_view_ml(
    volume_hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float], min_ml: float = 1.0
) -> float:
    """Gas below the lung bases inside the body, in pockets of ``min_ml`` or more.

    A field of view that includes the stomach or the colon flexures shows such pockets whatever
    the segmentation did with them; lung voxels are counted too, so a mask that took the gas in
    does not hide it.

    Args:
        volume_hu: ``(D, H, W)`` HU.
        lungs: ``(D, H, W)`` boolean lungs (any segmentation of the scan).
        spacing: ``(D, H, W)`` mm.
        min_ml: smallest pocket counted, in mL.

    Returns:
        The volume in mL.
    """
    if not lungs.any():
        return 0.0
    under = below_lung_base(lungs & (volume_hu >= GAS_HU), spacing)
    gas = (volume_hu < GAS_HU) & body_mask(volume_hu) & under
    components, count = ndimage.label(gas)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:] * voxel_ml
    return round(float(sizes[sizes >= min_ml].sum()), 1)


def ct_inputs(data: Path) -> list[tuple[str, Path, Path | None]]:
    """``(case, volume path, reference labels or None)`` for the manifest's cases and DICOM series."""
    inputs: list[tuple[str, Path, Path | None]] = []
    manifest = data / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as handle:
            for row in csv.DictReader(handle):
                inputs.append((row["case"], data / row["ct"], data / row["labels"] if row.get("labels") else None))
    dicom = data / "dicom"
    if dicom.is_dir():
        inputs.extend((folder.name, folder, None) for folder in sorted(dicom.iterdir()) if folder.is_dir())
    return inputs


def report_case(predictor: CTPredictor, case: str, path: Path, reference: Path | None) -> dict[str, Any]:
    """The gas figures of one CT (see the module docstring)."""
    volume, meta = read_ct(path)
    spacing = meta.spacing_dhw
    result = predictor.predict(volume, spacing, meta.direction)
    row: dict[str, Any] = {"case": case, "shape_dhw": list(volume.shape),
                           "spacing_dhw_mm": [round(float(s), 3) for s in spacing],
                           "right_volume_ml": result.volumes["right_volume_ml"],
                           "left_volume_ml": result.volumes["left_volume_ml"],
                           "right_emphysema_index": result.volumes["right_emphysema_index"],
                           "left_emphysema_index": result.volumes["left_emphysema_index"],
                           **{f"pred_{k}": v for k, v in gas_in_lungs_ml(result.labels, volume, spacing).items()}}
    lungs = result.labels > 0
    if reference is not None:
        truth = read_label(reference, meta)
        row.update({f"ref_{k}": v for k, v in gas_in_lungs_ml(truth, volume, spacing).items()})
        lungs = lungs | (truth > 0)
    row["gas_below_bases_in_view_ml"] = gas_below_bases_in_view_ml(volume, lungs, spacing)
    row["stomach_or_colon_in_view"] = row["gas_below_bases_in_view_ml"] > 0
    logger.info("%s: %s", case, row)
    return row


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: writes the report JSON and prints one line per case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ct"), help="CT data folder")
    parser.add_argument("--model", default="ct", help="CT model name, alias or weights path")
    parser.add_argument("--out", type=Path, default=Path("runs/ct_gas/report.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.data.is_dir():
        parser.error(f"{args.data}: no such data folder")
    predictor = CTPredictor.from_registry(args.model)
    rows = [report_case(predictor, case, path, ref) for case, path, ref in ct_inputs(args.data)
            if path.exists()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"model": predictor.name, "data": str(args.data), "cases": rows})
    for row in rows:
        print(f"{row['case']}: gas R/L {row['pred_right_gas_ml']}/{row['pred_left_gas_ml']} mL, "
              f"subdiaphragmatic R/L {row['pred_right_subdiaphragmatic_gas_ml']}/"
              f"{row['pred_left_subdiaphragmatic_gas_ml']} mL, gas below the bases in view "
              f"{row['gas_below_bases_in_view_ml']} mL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
