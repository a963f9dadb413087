"""Shipped CT weights on the shared labelled cases (real data; skipped when absent).

Cases the shipped model was trained on are segmented with its shipped leave-one-case-out fold
(see ``ml/ct/evaluation.py``), so every Dice here is on a case the network did not see, except
the imlab cases, which both folds train on (flagged in the assertion message).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml import metrics
from ml.ct.api import _loco_partners
from ml.ct.data import read_manifest
from ml.ct.inference import CTPredictor
from ml.ct.io import read_ct, read_label
from ml.registry import resolve

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def predictors() -> dict[str, CTPredictor]:
    card = resolve("ct")
    names = {card.name, *_loco_partners(card).values()}
    return {name: CTPredictor.from_registry(name) for name in names}


def test_shipped_card_is_a_ct_model_with_sides() -> None:
    card = resolve("ct")
    assert card.modality == "ct" and "ct" in card.aliases
    assert card.labels == {"0": "background", "1": "right_lung", "2": "left_lung"}
    assert card.weights_path.stat().st_size < 20 * 1024 * 1024
    assert card.training["licences"], "the card must state the training data licences"


def test_shipped_weights_reach_dice_095_per_lung(shared_data: Path, predictors: dict[str, CTPredictor]) -> None:
    card = resolve("ct")
    partners = _loco_partners(card)
    failures = []
    for record in read_manifest(shared_data / "ct" / "manifest.csv", "all"):
        name = partners.get(record.case, card.name) if record.case in card.training["cases"] else card.name
        volume, meta = read_ct(record.ct)
        truth = read_label(record.labels, meta)
        labels = predictors[name].predict(volume, meta.spacing_dhw, meta.direction).labels
        pairs = [(1, 1), (2, 2)] if record.lr_labels else [(None, None)]
        for predicted, reference in pairs:
            pred = labels > 0 if predicted is None else labels == predicted
            true = truth > 0 if reference is None else truth == reference
            score = metrics.dice(pred, true)
            if score < 0.95:
                failures.append(f"{record.case} label {reference or 'lung'} with {name}: Dice {score:.4f}")
    assert not failures, failures
