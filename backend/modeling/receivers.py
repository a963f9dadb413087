"""Signal receivers of modeling: seed the registry and schedules after ``migrate``; queue proposals on ingest."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError

logger = logging.getLogger(__name__)


def seed_registry_after_migrate(sender: Any, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """Register the shipped model cards (``ml/weights/*.json``) after each ``migrate``."""
    if using != DEFAULT_DB_ALIAS:
        return
    try:
        from .services import sync_registry

        versions = sync_registry()
    except (ImportError, LookupError, ValueError) as exc:
        # ml not importable, or a card being written / malformed (ml.RegistryError is a
        # LookupError): migrate must not fail for it; `manage.py sync_model_registry` reports it.
        logger.warning("model registry not seeded: %s", exc)
        return
    logger.info("model registry: %d shipped model version(s)", len(versions))


def ensure_schedules(sender: Any = None, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """``post_migrate`` and Celery's ``beat_init``: create or update the periodic tasks."""
    if using != DEFAULT_DB_ALIAS:
        return
    from .schedules import ensure_periodic_tasks

    try:
        ensure_periodic_tasks()
    except DatabaseError as exc:  # django_celery_beat not migrated yet (e.g. `migrate modeling` alone)
        logger.warning("periodic tasks not created: %s", exc)


def queue_proposals_on_ingest(sender: Any, series: Any, created: bool = False, **kwargs: Any) -> None:
    """``imaging.signals.series_stored`` (inside the ingest transaction): one pending proposal job per
    X-ray image or CT series, committed with the upload and sent to the broker after commit."""
    from .services import NoChampionError, queue_proposals_for_series

    try:
        queue_proposals_for_series(series)
    except NoChampionError as exc:
        logger.warning("series %s ingested without a proposal: %s", series.pk, exc)


def report_proposals(sender: Any, series: Any, **kwargs: Any) -> dict[str, dict[str, int]]:
    """``imaging.signals.series_ingested`` (after commit): the series' jobs by status, for the uploader."""
    from .services import status_counts

    return {"proposals": status_counts(series)}


def connect_ingest_hook() -> None:
    """Connect the receivers to imaging's ingest signals."""
    from imaging.signals import series_ingested, series_stored

    series_stored.connect(queue_proposals_on_ingest, dispatch_uid="modeling.queue_proposals_on_ingest")
    series_ingested.connect(report_proposals, dispatch_uid="modeling.report_proposals")
