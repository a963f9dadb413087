"""Run the QC checks (:mod:`quality.checks`) on a revision and store the flags."""

from __future__ import annotations

import logging

import numpy as np
from django.db import transaction

from annotation import labelmaps
from annotation.models import MaskRevision

from . import checks
from .models import QCFlag, QCSummary

logger = logging.getLogger(__name__)


def modality_of(revision: MaskRevision) -> str:
    """``"cxr"`` for a 2D label map, ``"ct"`` for a 3D one."""
    return "cxr" if len(revision.shape) == 2 else "ct"


def run_qc(revision: MaskRevision, labels: np.ndarray) -> QCSummary:
    """Compute and store the flags of a revision (idempotent: an existing summary is returned).

    Args:
        revision: the stored revision (its spacing and model scores are used).
        labels: its label map, ``(H, W)`` or ``(D, H, W)`` uint8.
    """
    existing = QCSummary.objects.filter(revision=revision).first()
    if existing is not None:
        return existing
    modality = modality_of(revision)
    spacing = tuple(revision.spacing) if revision.spacing else None
    grid = labelmaps.to_regular_grid(labels, revision.geometry)  # irregular series: sizes on the regular grid
    flags = checks.evaluate(labels, modality, spacing=spacing, measured=grid, confidence=revision.confidence,
                            entropy=revision.entropy)
    with transaction.atomic():
        QCFlag.objects.bulk_create([
            QCFlag(revision=revision, name=f.name, value=f.value, unit=f.unit, flagged=f.flagged,
                   message=f.message[:300], detail=f.detail) for f in flags])
        summary = QCSummary.objects.create(
            revision=revision, modality=modality, flagged_count=sum(f.flagged for f in flags),
            priority=checks.priority(flags), confidence=revision.confidence)
    logger.info("QC of revision %s: %s", revision.pk, ", ".join(f.name for f in flags if f.flagged) or "no flags")
    return summary
