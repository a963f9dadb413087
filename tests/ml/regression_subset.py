"""The fixed real-data subset whose per-case Dice guards the package layout against drift.

Eight chest X-rays (val and test, four datasets) and two small CT volumes (val), chosen as the
first rows of each group in the shared manifests' file order. :func:`write_subset` writes
manifests holding only those rows into a scratch folder whose dataset folders are links to the
shared data, so that evaluation runs on exactly this subset.
"""

from __future__ import annotations

import csv
from pathlib import Path

CXR_PICK: dict[tuple[str, str], int] = {
    ("covidqu", "val"): 3,
    ("radiography_vp", "val"): 2,
    ("montgomery", "test"): 2,
    ("shenzhen", "test"): 1,
}
"""(dataset, split) → how many of its first manifest rows the subset takes."""

CT_CASES: tuple[str, ...] = ("cip_copdgene_10002K", "imlab_uiip_id004")
"""CT cases (both in the val split) the subset takes."""

FIXTURE = Path(__file__).with_name("regression_dice.json")
"""Per-case Dice of the shipped models on this subset, measured on 2026-12-08 at commit e92478e
(before the package was split into core / cxr / ct / experiments) with
``ml.evaluation.evaluate_model("cxr", manifest, split, out)`` for the X-rays and
``ml.ct.api.evaluate("ct", manifest, "val", out)`` for the CT cases, read from their
``per_case.csv`` (CT values as written there, to 4 decimals)."""


def _write_rows(source: Path, target_dir: Path, keep: list[dict[str, str]], fields: list[str]) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    for entry in source.parent.iterdir():
        if entry.is_dir() and not (target_dir / entry.name).exists():
            (target_dir / entry.name).symlink_to(entry, target_is_directory=True)
    out = target_dir / "manifest.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
    return out


def write_subset(shared_data: Path, scratch: Path) -> tuple[Path, Path]:
    """Write the subset's X-ray and CT manifests under ``scratch``; returns ``(cxr, ct)`` paths."""
    with (shared_data / "cxr" / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        cxr_fields, taken, keep = list(reader.fieldnames or []), dict.fromkeys(CXR_PICK, 0), []
        for row in reader:
            key = (row["dataset"], row["split"])
            if key in taken and taken[key] < CXR_PICK[key]:
                taken[key] += 1
                keep.append(row)
    cxr = _write_rows(shared_data / "cxr" / "manifest.csv", scratch / "cxr", keep, cxr_fields)
    with (shared_data / "ct" / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        ct_fields = list(reader.fieldnames or [])
        ct_keep = [row for row in reader if row["case"] in CT_CASES]
    ct = _write_rows(shared_data / "ct" / "manifest.csv", scratch / "ct", ct_keep, ct_fields)
    return cxr, ct
