"""The reorganised package gives the same per-case Dice as before on a fixed real-data subset.

``regression_dice.json`` was measured with the package as it was before the layout change
(``tests/ml/regression_subset.py`` names the cases); this re-evaluates them through the public
API (:func:`ml.evaluate`) and compares to 4 decimals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ml
from ml.metrics import read_csv_rows
from tests.ml.regression_subset import FIXTURE, write_subset

pytestmark = pytest.mark.realdata


def test_per_case_dice_unchanged(shared_data: Path, tmp_path: Path) -> None:
    """Each X-ray case's Dice and each CT case's per-side and lung Dice equal the fixture's."""
    expected = json.loads(FIXTURE.read_text())
    cxr_manifest, ct_manifest = write_subset(shared_data, tmp_path / "data")
    cxr: dict[str, float] = {}
    for split in ("val", "test"):
        ml.evaluate("cxr", cxr_manifest, split, tmp_path / f"cxr_{split}")
        cxr.update({f"{r['dataset']}/{r['case']}": round(float(r["dice"]), 4)
                    for r in read_csv_rows(tmp_path / f"cxr_{split}" / "per_case.csv")})
    assert cxr == {case: round(value, 4) for case, value in expected["cxr"].items()}
    ml.evaluate("ct", ct_manifest, "val", tmp_path / "ct_val")
    ct = {r["case"]: {k: round(float(v), 4) for k, v in r.items() if k.startswith("dice_") and v not in ("", "nan")}
          for r in read_csv_rows(tmp_path / "ct_val" / "per_case.csv")}
    assert ct == expected["ct"]
