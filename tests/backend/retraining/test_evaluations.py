"""Evaluation rows (model version × dataset version × test set, never overwritten) and the gate on stored scores."""

from __future__ import annotations

import pytest

from modeling.models import ModelStatus, ModelVersion
from retraining import datasets, evaluations, promotion
from retraining.models import Evaluation, ImmutableError, PromotionDecision, EvalSet
from retraining_helpers import curated_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(project, settings):
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.5, 0.3
    curated_dataset(project)  # patients until train, val and test each hold one (the split is seeded per pseudonym)
    version, _ = datasets.snapshot(project, "cxr")
    assert version.counts["test"] >= 1
    settings.PLEURA_REFERENCE_SETS = {"cxr": {"manifest": version.manifest, "split": "val"}}
    return version


def test_evaluation_is_stored_once_per_model_dataset_and_set(tiny_cxr_version, dataset):
    row = evaluations.evaluate_on_dataset(tiny_cxr_version, dataset)
    assert row.test_set == EvalSet.PROJECT_TEST and row.n_cases == dataset.counts["test"]
    test_cases = {f"pleura/{i.case}" for i in dataset.items.filter(split="test")}
    assert set(row.case_dice) == test_cases and all(0.0 <= d <= 1.0 for d in row.case_dice.values())
    assert {"dice_mean", "dice_median", "dice_p05"} <= set(row.summary)
    assert evaluations.evaluate_on_dataset(tiny_cxr_version, dataset).pk == row.pk  # history: read back, not redone
    reference = evaluations.evaluate_on_reference(tiny_cxr_version)
    assert reference is not None and reference.dataset_version is None and reference.n_cases == dataset.counts["val"]
    assert Evaluation.objects.count() == 2
    with pytest.raises(ImmutableError):
        row.n_cases = 0
        row.save()


def test_gate_refuses_a_candidate_that_is_not_better(tiny_cxr_version, dataset):
    same = ModelVersion.objects.create(name="tiny-cxr-same", modality="cxr", sha256=tiny_cxr_version.sha256,
                                       weights_file=tiny_cxr_version.weights_file)
    decision = promotion.judge(same, dataset)
    same.refresh_from_db()
    assert not decision.promoted and same.status == ModelStatus.CANDIDATE
    assert "does not lie above 0" in decision.reason and decision.stats["reference_loss"] == pytest.approx(0.0)
    assert PromotionDecision.objects.get().champion == tiny_cxr_version
    assert Evaluation.objects.filter(model_version=same).count() == 2  # project test split + reference
