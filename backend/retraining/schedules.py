"""Schedules and triggers of retraining.

Every project and modality has a :class:`RetrainingPolicy` with a nightly django-celery-beat task
(``retraining.tasks.check_project``, editable in the admin) and a label trigger: when a curated
revision is stored and ``min_new_labels`` curated labels have arrived since the last run, the same
check is queued. The check snapshots the curated labels and starts a run only when that dataset
version has no run yet (and no run of the project and modality is active): nothing runs twice for
the same dataset version.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from annotation.models import MaskRevision, RevisionSource
from imaging.models import Project
from modeling import training
from modeling.models import ModelModality, RunStatus, TrainingRun

from . import datasets, jobs
from .models import RetrainingPolicy

logger = logging.getLogger(__name__)

CHECK_TASK = "retraining.tasks.check_project"


def ensure_policy(project: Project, modality: str) -> RetrainingPolicy:
    """The project's policy for ``modality`` with its nightly beat task, created when missing (idempotent)."""
    policy, _ = RetrainingPolicy.objects.get_or_create(
        project=project, modality=modality,
        defaults={"min_new_labels": int(getattr(settings, "PLEURA_RETRAIN_MIN_NEW_LABELS", 50))})
    if policy.nightly_task_id is None:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute="0", hour=str(getattr(settings, "PLEURA_RETRAIN_NIGHTLY_HOUR", 2)), day_of_week="*",
            day_of_month="*", month_of_year="*", timezone=settings.TIME_ZONE)
        task, _ = PeriodicTask.objects.get_or_create(
            name=f"retraining check: project {project.pk} {modality}",
            defaults={"task": CHECK_TASK, "crontab": crontab,
                      "kwargs": json.dumps({"project_id": project.pk, "modality": modality, "reason": "nightly"})})
        policy.nightly_task = task
        policy.save(update_fields=["nightly_task"])
    return policy


SWEEP_TASK = "retraining.tasks.sweep_stale_runs"


def ensure_sweep() -> PeriodicTask:
    """The beat task that resumes or fails training runs whose worker died (every 10 minutes)."""
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period=IntervalSchedule.MINUTES)
    task, _ = PeriodicTask.objects.get_or_create(name="retraining: resume or fail stale training runs",
                                                 defaults={"task": SWEEP_TASK, "interval": every})
    return task


def ensure_all_policies() -> int:
    """A policy per project and modality for every project, and the stale-run sweep; returns how many policies exist."""
    ensure_sweep()
    for project in Project.objects.order_by("pk"):
        for modality in ModelModality.values:
            ensure_policy(project, modality)
    return RetrainingPolicy.objects.count()


def check_project(project_id: int, modality: str, reason: str = "nightly") -> str:
    """Snapshot the curated labels and start a run when this dataset version has none; returns the outcome."""
    project = Project.objects.get(pk=project_id)
    policy = ensure_policy(project, modality)
    if not policy.enabled:
        outcome = "retraining disabled for this project and modality"
    else:
        outcome = _check(project, modality)
    RetrainingPolicy.objects.filter(pk=policy.pk).update(last_check_at=timezone.now(),
                                                         last_outcome=f"{reason}: {outcome}")
    logger.info("retraining check of project %s (%s, %s): %s", project_id, modality, reason, outcome)
    return outcome


def _check(project: Project, modality: str) -> str:
    try:
        dataset, _ = datasets.snapshot(project, modality)
    except datasets.DatasetError as exc:
        return f"skipped: {exc}"
    if not dataset.counts.get("train") or not dataset.counts.get("val") or not dataset.counts.get("test"):
        return f"skipped: {dataset} needs train, val and test cases (has {dataset.counts})"
    trained = TrainingRun.objects.filter(project=project, modality=modality, dataset_sha256=dataset.sha256,
                                         status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED])
    if trained.exists():
        return f"skipped: {dataset} already has a run"
    try:
        run = jobs.start_training(project, dataset)
    except training.TrainingError as exc:
        return f"skipped: {exc}"
    return f"started run {run.name} on {dataset}"


def new_curated_since_last_run(project: Project, modality: str) -> int:
    """Curated labels stored since the project's last training run of ``modality`` (all when there was none)."""
    last = TrainingRun.objects.filter(project=project, modality=modality).order_by("-created_at").first()
    curated = MaskRevision.objects.filter(project=project, source=RevisionSource.PERSON,
                                          status__in=datasets.CURATED_STATUSES,
                                          series__modality__in=datasets.dicom_modalities(modality))
    if last is not None:
        curated = curated.filter(created_at__gt=last.created_at)
    return curated.values("target_key").distinct().count()


def on_revision_curated(sender: Any, revision: MaskRevision, **kwargs: Any) -> None:
    """``annotation.signals.revision_curated``: a newly curated label may trigger a check (after commit)."""
    if revision.source != RevisionSource.PERSON or revision.status not in datasets.CURATED_STATUSES:
        return
    from modeling.services import DICOM_TO_MODEL

    modality = DICOM_TO_MODEL.get(revision.series.modality)
    if modality is None:
        return
    policy = ensure_policy(revision.project, modality)
    if not policy.enabled or new_curated_since_last_run(revision.project, modality) < policy.min_new_labels:
        return
    from . import tasks

    project_id = revision.project_id
    transaction.on_commit(lambda: tasks.check_project.delay(project_id, modality, "new labels"), robust=True)
