"""Orchestration of retraining: dataset version → training run (``train`` queue) → evaluation → gate.

:func:`start_training` records a run through :mod:`modeling.training` and sends it to the ``train``
queue after commit; :func:`after_training` (called by the task once a candidate is registered)
scores candidate and champion and applies the gate (:func:`retraining.promotion.judge`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from imaging.models import Project
from modeling import training
from modeling.evaluation import EvaluationError
from modeling.models import ModelVersion, TrainingRun
from modeling.services import NoChampionError

from .gate import GateError
from .models import DatasetVersion, PromotionDecision
from .promotion import PromotionError, judge

logger = logging.getLogger(__name__)


def enqueue(run: TrainingRun) -> None:
    """Send the run to the ``train`` queue once the current transaction commits."""
    from . import tasks

    def send() -> None:
        result = tasks.train.apply_async(args=[run.pk])
        TrainingRun.objects.filter(pk=run.pk, celery_task_id="").update(celery_task_id=result.id or "")

    transaction.on_commit(send, robust=True)


def start_training(project: Project, dataset: DatasetVersion, *, from_scratch: bool = False, seed: int = 42,
                   overrides: dict[str, Any] | None = None) -> TrainingRun:
    """Queue a training run on ``dataset`` (fine-tuned from the champion unless ``from_scratch``).

    ``PLEURA_TRAIN_OVERRIDES`` (a nested dict, e.g. ``{"train": {"epochs": 1}}``) is merged into every
    run's config, then ``overrides``.

    Raises:
        modeling.training.RunConflictError: a run is active for the project and modality, or this
            dataset version already has one.
        modeling.training.TrainingError: no champion to start from, or the modality cannot be trained.
    """
    merged = training.deep_merge(getattr(settings, "PLEURA_TRAIN_OVERRIDES", None) or {}, overrides or {})
    run = training.create_run(project=project, modality=dataset.modality, dataset_version_id=dataset.pk,
                              dataset_sha256=dataset.sha256, manifest=dataset.manifest, from_scratch=from_scratch,
                              seed=seed, overrides=merged)
    enqueue(run)
    return run


def after_training(run_id: int, candidate: ModelVersion) -> PromotionDecision | None:
    """Score the new candidate against the champion on the run's dataset version and apply the gate."""
    run = TrainingRun.objects.get(pk=run_id)
    dataset = DatasetVersion.objects.filter(pk=run.dataset_version_id).first()
    if dataset is None:
        logger.warning("training run %s: dataset version %s is gone; no gate", run.name, run.dataset_version_id)
        return None
    if candidate.status == "champion":  # the first model of a modality with no champion yet
        logger.info("candidate %s became champion as the modality's first model", candidate.name)
        return None
    try:
        return judge(candidate, dataset)
    except (EvaluationError, GateError, NoChampionError, PromotionError) as exc:
        logger.error("training run %s: candidate %s kept without a gate decision: %s", run.name, candidate.name, exc)
        return None
