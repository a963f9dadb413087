"""Celery tasks of the imaging app (thin wrappers over services)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import services


@shared_task(name="imaging.compute_series_statistics", acks_late=True)
def compute_series_statistics_task(series_id: int) -> dict[str, Any] | None:
    """Compute and store intensity statistics of a series after ingest."""
    return services.compute_series_statistics(series_id)
