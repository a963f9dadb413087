"""Shipped CT weights on the shared labelled cases (real data; skipped when absent).

Cases the shipped model was trained on are segmented with its shipped leave-one-case-out fold
when one exists (see ``ml/ct/evaluation.py``): nsclc_lung1_001 by ``ct_unet192_loco_nsclc001``;
nsclc_lung1_002 was never seen by ``ct_unet192``. The imlab train cases are seen by both folds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ml import metrics
from ml.ct.api import _loco_partners
from ml.ct.data import read_manifest
from ml.ct.inference import CTPredictor
from ml.ct.io import read_ct, read_label
from ml.registry import resolve

pytestmark = pytest.mark.realdata

CASES = ["nsclc_lung1_001", "nsclc_lung1_002", "cip_copdgene_10002K", "imlab_uiip_id001", "imlab_uiip_id002",
         "imlab_uiip_id003", "imlab_uiip_id004"]
KNOWN_SHORTFALL = {
    "nsclc_lung1_002": "held-out NSCLC case: right lung Dice ~0.94; the reference counts the dense collapsed "
                       "lung behind the tumour as lung in some slices, the model does not; see ml/README.md, CT results",
}
_PREDICTORS: dict[str, CTPredictor] = {}


def _predictor(name: str) -> CTPredictor:
    if name not in _PREDICTORS:
        _PREDICTORS[name] = CTPredictor.from_registry(name)
    return _PREDICTORS[name]


def test_shipped_card_is_a_ct_model_with_sides() -> None:
    card = resolve("ct")
    assert card.modality == "ct" and "ct" in card.aliases
    assert card.labels == {"0": "background", "1": "right_lung", "2": "left_lung"}
    assert card.weights_path.stat().st_size < 20 * 1024 * 1024
    assert any("NSCLC" in text for text in card.training["licences"]), "the card must state the NC licence"


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN_SHORTFALL[c])) if c in KNOWN_SHORTFALL
     else c for c in CASES],
)
def test_shipped_weights_reach_dice_095_per_lung(shared_data: Path, case: str) -> None:
    card = resolve("ct")
    record = next(r for r in read_manifest(shared_data / "ct" / "manifest.csv", "all") if r.case == case)
    name = _loco_partners(card).get(case, card.name) if case in card.training["cases"] else card.name
    volume, meta = read_ct(record.ct)
    truth = read_label(record.labels, meta)
    labels = _predictor(name).predict(volume, meta.spacing_dhw, meta.direction).labels
    pairs = {"right": (labels == 1, truth == 1), "left": (labels == 2, truth == 2)} if record.lr_labels \
        else {"lung": (labels > 0, truth > 0)}
    scores = {side: metrics.dice(pred, true) for side, (pred, true) in pairs.items()}
    assert min(scores.values()) >= 0.95, f"{case} with {name}: {scores}"


def test_held_out_nsclc_001_meets_the_dice_and_volume_targets(shared_data: Path) -> None:
    """Leave-one-case-out: the fold that never saw nsclc_lung1_001 reaches Dice ≥ 0.97 and ±3 % volume per lung."""
    card = resolve("ct")
    case = "nsclc_lung1_001"
    name = _loco_partners(card)[case]
    record = next(r for r in read_manifest(shared_data / "ct" / "manifest.csv", "all") if r.case == case)
    volume, meta = read_ct(record.ct)
    truth = read_label(record.labels, meta)
    labels = _predictor(name).predict(volume, meta.spacing_dhw, meta.direction).labels
    for side in (1, 2):
        pred, true = labels == side, truth == side
        assert metrics.dice(pred, true) >= 0.97, (side, metrics.dice(pred, true))
        error = 100.0 * (int(pred.sum()) - int(true.sum())) / int(true.sum())
        assert abs(error) <= 3.0, (side, error)
