"""Signal receivers of modeling: seed the registry after ``migrate``; queue proposals on ingest."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS

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


def queue_proposals_on_ingest(sender: Any, series: Any, created: bool = False, **kwargs: Any) -> None:
    """``imaging.signals.series_ingested``: one proposal job per X-ray image or CT series."""
    from .services import NoChampionError, queue_proposals_for_series

    try:
        queue_proposals_for_series(series)
    except NoChampionError as exc:
        logger.warning("series %s ingested without a proposal: %s", series.pk, exc)


def connect_ingest_hook() -> None:
    """Connect :func:`queue_proposals_on_ingest` to imaging's ingest signal."""
    from imaging.signals import series_ingested

    series_ingested.connect(queue_proposals_on_ingest, dispatch_uid="modeling.queue_proposals_on_ingest")
