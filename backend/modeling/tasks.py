"""Celery tasks of modeling: thin wrappers over :mod:`modeling.services`.

Two proposal task names, one per modality, so that ``PLEURA_TASK_ROUTES`` can send CT to a
``gpu`` queue and X-ray to ``cpu`` (default queue: ``cpu``). Every proposal task is ``acks_late``
with ``reject_on_worker_lost`` and has a soft and a hard time limit (``PLEURA_CT_SOFT_TIME_LIMIT_S``
...; enforced by the prefork pool; the sweep enforces the hard one in any pool). A worker killed
mid-job stops its heartbeat and :func:`sweep_jobs` (run by beat) requeues the job within
``PLEURA_JOB_STALE_S`` + ``PLEURA_JOB_SWEEP_INTERVAL_S`` seconds; the job row makes reruns
idempotent. Database and storage errors are retried with exponential backoff.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import services

logger = logging.getLogger(__name__)

#: Errors that may pass (database or storage unavailable): retried with backoff.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError, TimeoutError)
MAX_RETRIES: int = int(getattr(settings, "PLEURA_PROPOSAL_MAX_RETRIES", 3))
BACKOFF_S: float = float(getattr(settings, "PLEURA_PROPOSAL_RETRY_BACKOFF", 5.0))
BACKOFF_MAX_S: float = 300.0

_OPTIONS: dict[str, Any] = {"bind": True, "acks_late": True, "reject_on_worker_lost": True,
                            "max_retries": MAX_RETRIES, "ignore_result": False}


def backoff(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 5, 10, 20, ... capped at 5 minutes."""
    return min(BACKOFF_S * (2 ** retries), BACKOFF_MAX_S)


def _run(task: Task, job_id: int) -> dict[str, Any]:
    """Run the job; on a transient error retry with backoff (in-process mode: at once, in a loop)."""
    retries = task.request.retries or 0
    heartbeat_s = None if task.request.is_eager else settings.PLEURA_JOB_HEARTBEAT_S
    while True:
        try:
            job = services.run_job(job_id, heartbeat_s=heartbeat_s, time_limit_s=task.soft_time_limit)
        except services.PERMANENT_ERRORS:
            return {"job": job_id, "status": "failed"}
        except SoftTimeLimitExceeded:
            services.record_error(job_id, services.ProposalTimeLimitError(task.soft_time_limit), final=True)
            return {"job": job_id, "status": "failed"}
        except TRANSIENT_ERRORS as exc:
            final = retries >= task.max_retries
            services.record_error(job_id, exc, final=final)
            if final:
                return {"job": job_id, "status": "failed"}
            if task.request.is_eager:  # no broker to wait on: the embedded default retries in place
                retries += 1
                continue
            raise task.retry(exc=exc, countdown=backoff(retries)) from exc
        except Exception as exc:
            # An unexpected error (a bug): record it on the job so the API shows it, then let Celery see it.
            services.record_error(job_id, exc, final=True)
            raise
        if job is None:
            return {"job": job_id, "status": "skipped"}
        return {"job": job_id, "status": job.status, "revision_id": job.revision_id}


@shared_task(name="modeling.tasks.propose_cxr", soft_time_limit=settings.PLEURA_CXR_SOFT_TIME_LIMIT_S,
             time_limit=settings.PLEURA_CXR_TIME_LIMIT_S, **_OPTIONS)
def propose_cxr(self: Task, job_id: int) -> dict[str, Any]:
    """Run one X-ray proposal job."""
    return _run(self, job_id)


@shared_task(name="modeling.tasks.propose_ct", soft_time_limit=settings.PLEURA_CT_SOFT_TIME_LIMIT_S,
             time_limit=settings.PLEURA_CT_TIME_LIMIT_S, **_OPTIONS)
def propose_ct(self: Task, job_id: int) -> dict[str, Any]:
    """Run one CT proposal job."""
    return _run(self, job_id)


@shared_task(name=services.SWEEP_TASK, ignore_result=True)
def sweep_jobs() -> dict[str, list[int]]:
    """Requeue jobs of lost workers, fail jobs over their limits, send pending jobs (run by beat)."""
    return services.sweep_jobs().as_dict()
