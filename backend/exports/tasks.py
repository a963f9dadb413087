"""Celery task of exports: a thin wrapper over :func:`exports.services.run_export`."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from . import services


@shared_task(name="exports.tasks.run_export", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_export_task(self: Task, job_id: int) -> dict[str, Any]:
    """Run one export job; the job row carries status, progress and the archive."""
    job = services.run_export(job_id)
    if job is None:
        return {"job": job_id, "status": "missing"}
    return {"job": job_id, "status": job.status, "dataset_hash": job.dataset_hash}
