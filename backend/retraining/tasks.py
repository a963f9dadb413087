"""Celery tasks of retraining: the training job (``train`` queue) and the stale-run sweep. Thin wrappers.

``train`` is ``acks_late`` with ``reject_on_worker_lost``: when the worker dies mid-run the message
is delivered again and the run resumes from its ``last.pt``; :func:`sweep_stale_runs` (beat) fails a
run whose worker stopped sending heartbeats once its attempts are used up.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from modeling import training

from . import jobs

logger = logging.getLogger(__name__)

TRAIN_QUEUE = "train"


@shared_task(name="retraining.tasks.train", queue=TRAIN_QUEUE, acks_late=True, reject_on_worker_lost=True,
             ignore_result=False)
def train(run_id: int) -> dict[str, Any]:
    """Run one training run, then evaluate its candidate and apply the promotion gate."""
    candidate = training.run_training(run_id)
    if candidate is None:
        return {"run": run_id, "candidate": None}
    decision = jobs.after_training(run_id, candidate)
    return {"run": run_id, "candidate": candidate.name, "promoted": bool(decision and decision.promoted),
            "reason": decision.reason if decision else ""}


@shared_task(name="retraining.tasks.sweep_stale_runs")
def sweep_stale_runs() -> dict[str, Any]:
    """Resume (or fail, when attempts are used up) runs whose worker stopped sending heartbeats."""
    timeout = float(getattr(settings, "PLEURA_TRAIN_HEARTBEAT_TIMEOUT_S", 600))
    resumed = training.recover_stale_runs(timeout, int(getattr(settings, "PLEURA_TRAIN_MAX_ATTEMPTS", 2)))
    for run in resumed:
        jobs.enqueue(run)
    return {"resumed": [run.pk for run in resumed]}


@shared_task(name="retraining.tasks.check_project")
def check_project(project_id: int, modality: str, reason: str = "nightly") -> str:
    """Nightly (beat) or label-triggered check: start a run when the curated labels form a new dataset version."""
    from . import schedules

    return schedules.check_project(project_id, modality, reason)
