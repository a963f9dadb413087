"""Evaluation rows: every model version scored on a dataset version's frozen test split and the reference set.

Each (model version, dataset version, test set) is scored once with :func:`modeling.evaluation.evaluate_version`
(``ml.evaluate``) and kept; asking again returns the stored row.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from modeling.evaluation import evaluate_version
from modeling.models import ModelVersion

from .models import DatasetVersion, Evaluation, Split, EvalSet

logger = logging.getLogger(__name__)

#: Default reference sets: the external test split of the shipped data (``PLEURA_REFERENCE_SETS`` overrides).
DEFAULT_REFERENCE_SETS: dict[str, dict[str, str]] = {
    "cxr": {"manifest": str(Path(settings.REPO_ROOT).parent / "shared" / "data" / "cxr" / "manifest.csv"),
            "split": "test"},
}


def _out_dir(version: ModelVersion, name: str) -> Path:
    return Path(settings.PLEURA_DATA_DIR) / "evaluations" / version.name / name


def _store(version: ModelVersion, dataset: DatasetVersion | None, test_set: str, manifest: str, split: str) -> Evaluation:
    existing = Evaluation.objects.filter(model_version=version, dataset_version=dataset, test_set=test_set).first()
    if existing is not None:
        return existing
    scores = evaluate_version(version, manifest, split, _out_dir(version, dataset.sha256[:16] if dataset else test_set))
    try:
        with transaction.atomic():
            return Evaluation.objects.create(model_version=version, dataset_version=dataset, test_set=test_set,
                                             source=f"{manifest}#{split}", summary=scores.summary,
                                             case_dice=scores.case_dice, n_cases=len(scores.case_dice))
    except IntegrityError:  # scored concurrently: the first row stays
        return Evaluation.objects.get(model_version=version, dataset_version=dataset, test_set=test_set)


def evaluate_on_dataset(version: ModelVersion, dataset: DatasetVersion) -> Evaluation:
    """``version`` on ``dataset``'s frozen test split (computed once, then read back).

    Raises:
        modeling.evaluation.EvaluationError: the split has no case or ml refused the model.
    """
    return _store(version, dataset, EvalSet.PROJECT_TEST, dataset.manifest, Split.TEST)


def reference_set(modality: str) -> dict[str, str] | None:
    """``{"manifest", "split"}`` of the modality's reference set, or ``None`` when none is configured or present."""
    configured = getattr(settings, "PLEURA_REFERENCE_SETS", None)
    entry = (configured if configured is not None else DEFAULT_REFERENCE_SETS).get(modality)
    if not entry or not Path(entry["manifest"]).is_file():
        return None
    return entry


def evaluate_on_reference(version: ModelVersion) -> Evaluation | None:
    """``version`` on its modality's reference set, or ``None`` when the modality has none here."""
    entry = reference_set(version.modality)
    if entry is None:
        logger.info("no reference set for %s: reference evaluation skipped", version.modality)
        return None
    return _store(version, None, EvalSet.REFERENCE, entry["manifest"], entry["split"])
