"""Shipped CT weights on the shared labelled cases (real data; skipped when absent).

Cases the shipped model was trained on are segmented with its shipped leave-one-case-out fold
when one exists (see ``ml/ct/evaluation.py``): nsclc_lung1_001 by ``ct_unet192_loco_nsclc001``;
nsclc_lung1_002 was never seen by ``ct_unet192``. The imlab train cases are seen by both folds.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from ml import metrics
from ml.ct.api import _loco_partners
from ml.ct.data import read_manifest
from ml.ct.inference import CTPredictor, predict_classical
from ml.ct.io import CTMeta, read_ct, read_label
from ml.registry import resolve

pytestmark = pytest.mark.realdata

CASES = ["nsclc_lung1_001", "nsclc_lung1_002", "cip_copdgene_10002K", "imlab_uiip_id001", "imlab_uiip_id002",
         "imlab_uiip_id003", "imlab_uiip_id004"]
KNOWN_SHORTFALL = {
    "nsclc_lung1_002": "held-out NSCLC case: right lung Dice ~0.94; the reference counts the dense collapsed "
                       "lung behind the tumour as lung in some slices, the model does not; see docs/ml-experiments.md, 'CT: what still falls short'",
}
_PREDICTORS: dict[str, CTPredictor] = {}


class Segmented(NamedTuple):
    name: str
    labels: np.ndarray
    truth: np.ndarray
    lr_labels: bool
    volume: np.ndarray
    meta: CTMeta


_SEGMENTED: dict[str, Segmented] = {}


def _predictor(name: str) -> CTPredictor:
    if name not in _PREDICTORS:
        _PREDICTORS[name] = CTPredictor.from_registry(name)
    return _PREDICTORS[name]


def _segmented(shared_data: Path, case: str) -> Segmented:
    """A case segmented by the shipped model (its LOCO fold where there is one), once per session."""
    if case not in _SEGMENTED:
        card = resolve("ct")
        record = next(r for r in read_manifest(shared_data / "ct" / "manifest.csv", "all") if r.case == case)
        fold = _loco_partners(card).get(case) if case in card.training["cases"] else None
        name = str(fold.weights_path) if fold else card.name
        volume, meta = read_ct(record.ct)
        truth = read_label(record.labels, meta)
        labels = _predictor(name).predict(volume, meta.spacing_dhw, meta.direction).labels
        _SEGMENTED[case] = Segmented(name, labels, truth, record.lr_labels, volume, meta)
    return _SEGMENTED[case]


def _dice_per_side(labels: np.ndarray, truth: np.ndarray, lr_labels: bool) -> dict[str, float]:
    pairs = {"right": (labels == 1, truth == 1), "left": (labels == 2, truth == 2)} if lr_labels \
        else {"lung": (labels > 0, truth > 0)}
    return {side: metrics.dice(pred, true) for side, (pred, true) in pairs.items()}


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
    seg = _segmented(shared_data, case)
    scores = _dice_per_side(seg.labels, seg.truth, seg.lr_labels)
    assert min(scores.values()) >= 0.95, f"{case} with {seg.name}: {scores}"


@pytest.mark.parametrize("case", CASES)
def test_model_beats_the_classical_baseline_on_every_lung(shared_data: Path, case: str) -> None:
    """Per lung (or per whole lung where the reference has no sides), model Dice > classical Dice."""
    seg = _segmented(shared_data, case)
    model = _dice_per_side(seg.labels, seg.truth, seg.lr_labels)
    baseline = predict_classical(seg.volume, seg.meta.spacing_dhw, seg.meta.direction).labels
    classical = _dice_per_side(baseline, seg.truth, seg.lr_labels)
    assert all(model[side] > classical[side] for side in model), f"{case} with {seg.name}: {model} vs classical {classical}"


def test_held_out_nsclc_001_reaches_dice_097_per_lung(shared_data: Path) -> None:
    """Leave-one-case-out: the fold that never saw nsclc_lung1_001 reaches Dice ≥ 0.97 per lung."""
    seg = _segmented(shared_data, "nsclc_lung1_001")
    assert seg.name == str(_loco_partners(resolve("ct"))["nsclc_lung1_001"].weights_path)
    scores = _dice_per_side(seg.labels, seg.truth, seg.lr_labels)
    assert min(scores.values()) >= 0.97, scores


@pytest.mark.parametrize("case", ["nsclc_lung1_001", "nsclc_lung1_002"])
def test_held_out_nsclc_volumes_within_3_percent(shared_data: Path, case: str) -> None:
    """Both NSCLC cases are segmented by a model that never saw them; each lung's volume within ±3 %."""
    seg = _segmented(shared_data, case)
    errors = {side: 100.0 * (int((seg.labels == side).sum()) - int((seg.truth == side).sum())) / int((seg.truth == side).sum())
              for side in (1, 2)}
    assert all(abs(error) <= 3.0 for error in errors.values()), f"{case} with {seg.name}: {errors}"


def test_the_real_scanner_series_gets_one_piece_per_lung(shared_data: Path) -> None:
    """No partial-volume specks on lungdx_A0001 (before 30 Nov: 245 right-lung specks on the left lung's surface)."""
    from scipy import ndimage

    volume, meta = read_ct(shared_data / "ct" / "dicom" / "lungdx_A0001")
    labels = _predictor(resolve("ct").name).predict(volume, meta.spacing_dhw, meta.direction).labels
    pieces = {side: ndimage.label(labels == side, structure=np.ones((3, 3, 3)))[1] for side in (1, 2)}
    assert pieces == {1: 1, 2: 1}
