"""Receivers of annotation: store each model proposal as a revision."""

from __future__ import annotations

from typing import Any

from . import services


def store_proposal(sender: Any, job: Any, proposal: Any, **kwargs: Any) -> dict[str, int]:
    """``modeling.signals.proposal_ready`` → a model :class:`MaskRevision` (idempotent per job)."""
    revision = services.record_proposal(job, proposal)
    return {"revision_id": revision.pk}


def purge_series(sender: Any, series: Any, **kwargs: Any) -> dict[str, Any]:
    """``imaging.signals.series_deleting`` → delete the series' revisions; report their files and rows."""
    return services.purge_series(series)
