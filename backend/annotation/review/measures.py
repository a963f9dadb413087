"""How far a person's revision moved from the model's proposal (:class:`EditMeasure`), computed when it is stored."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from modeling import agreement

from .. import services
from ..models import MaskRevision, RevisionSource
from .models import EditMeasure

logger = logging.getLogger(__name__)


def latest_proposal(target_key: str, before_number: int | None = None) -> MaskRevision | None:
    """The target's newest model revision (older than revision ``before_number`` when given)."""
    revisions = MaskRevision.objects.filter(target_key=target_key, source=RevisionSource.MODEL)
    if before_number is not None:
        revisions = revisions.filter(number__lt=before_number)
    return revisions.order_by("-number").first()


def measure(revision: MaskRevision, labels: np.ndarray, proposal: MaskRevision,
            proposal_labels: np.ndarray | None = None) -> EditMeasure:
    """Store the :class:`EditMeasure` of ``revision`` (labels ``(H, W)`` or ``(D, H, W)``) against ``proposal``."""
    base = proposal_labels if proposal_labels is not None else services.read_labels(proposal)
    spacing = tuple(revision.spacing) if revision.spacing else None
    result = agreement.compare(base, labels, spacing)
    return EditMeasure.objects.create(
        revision=revision, proposal=proposal, added=result.added, removed=result.removed,
        relabelled=result.relabelled, changed_fraction=result.changed_fraction, dice_right=result.dice_right,
        dice_left=result.dice_left, dice=result.dice, hd95_right=result.hd95_right, hd95_left=result.hd95_left,
        hd95=result.hd95, hd95_unit=result.unit)


def on_revision_created(sender: Any, revision: MaskRevision, labels: np.ndarray, **kwargs: Any) -> None:
    """``revision_created`` receiver: measure every person's revision against the latest proposal before it."""
    if revision.source != RevisionSource.PERSON:
        return
    proposal = latest_proposal(revision.target_key, revision.number)
    if proposal is None or tuple(proposal.shape) != tuple(labels.shape):
        return
    edit = measure(revision, labels, proposal)
    logger.info("revision %s vs proposal %s: Dice %.4f, %d changed", revision.pk, proposal.pk, edit.dice,
                edit.added + edit.removed + edit.relabelled)
