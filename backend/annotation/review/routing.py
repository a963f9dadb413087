"""Where a closed task goes: review, automatic approval (sampled out, or a confident proposal accepted
unchanged), and how a decision moves the task and its revision on.

Called by :func:`annotation.workflow._close` inside the transaction that closes the task, so a task
is never left between the annotator's action and its routing.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from ..models import MaskRevision, RevisionSource, RevisionStatus
from ..task_models import AnnotationTask, TaskActionKind, TaskStatus
from ..signals import revision_curated
from .models import APPROVING_KINDS, DecisionKind, DoubleRead, DoubleReadStatus, ReviewDecision, ReviewPolicy

logger = logging.getLogger(__name__)


def policy_for(project_id: int) -> ReviewPolicy:
    """The project's review policy (created with the defaults on first use)."""
    policy, _ = ReviewPolicy.objects.get_or_create(project_id=project_id)
    return policy


def sample_value(project_id: int, task_id: int, purpose: str = "review") -> float:
    """A stable pseudo-random number in [0, 1) per task and purpose: a task is always in or out of a sample."""
    digest = hashlib.sha256(f"{purpose}:{project_id}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_review_sample(task: AnnotationTask, fraction: float) -> bool:
    """Whether the task is among the ``fraction`` of tasks a reviewer sees."""
    return sample_value(task.project_id, task.pk) < fraction


def in_double_read_sample(task: AnnotationTask, fraction: float) -> bool:
    """Whether the task is among the ``fraction`` of tasks read by two annotators independently."""
    return sample_value(task.project_id, task.pk, "double-read") < fraction


def compare_readings(pair: DoubleRead, second: MaskRevision, threshold: float) -> DoubleRead:
    """Store the second reading and the pair's agreement; below ``threshold`` (mean lung Dice) it needs adjudication."""
    from django.utils import timezone

    from modeling import agreement

    from .. import services

    first = pair.first_revision
    spacing = tuple(first.spacing) if first.spacing else None
    result = agreement.compare(services.read_labels(first), services.read_labels(second), spacing)
    pair.second_revision = second
    pair.dice_right, pair.dice_left, pair.dice = result.dice_right, result.dice_left, result.dice
    pair.hd95_right, pair.hd95_left, pair.hd95_unit = result.hd95_right, result.hd95_left, result.unit
    pair.threshold, pair.compared_at = threshold, timezone.now()
    pair.status = DoubleReadStatus.ADJUDICATION if result.dice < threshold else DoubleReadStatus.AGREED
    pair.save()
    logger.info("%s: Dice %.4f (threshold %.3f) → %s", pair, result.dice, threshold, pair.status)
    return pair


def auto_approvable(revision: MaskRevision, policy: ReviewPolicy) -> bool:
    """A model proposal accepted unchanged, without a raised QC flag, at or above the project's confidence threshold."""
    if policy.auto_approve_confidence is None or revision.status != RevisionStatus.ACCEPTED:
        return False
    parent = revision.parent
    if parent is None or parent.source != RevisionSource.MODEL or parent.checksum != revision.checksum:
        return False
    if parent.confidence is None or parent.confidence < policy.auto_approve_confidence:
        return False
    from quality.models import QCSummary  # downstream: read-only use of the flags computed on store

    flagged = QCSummary.objects.filter(revision_id__in=[revision.pk, parent.pk], flagged_count__gt=0).exists()
    return not flagged


def decide(task: AnnotationTask, reviewed: MaskRevision, kind: str, reviewer: Any = None, comment: str = "",
           result: MaskRevision | None = None) -> ReviewDecision:
    """Record a decision and move the task and revisions on (the caller holds the task's row lock).

    Approving kinds make ``result`` (default ``reviewed``) curated and the task done; a return sends
    the task back to the revision's author with the comment; a confirmed rejection closes it as rejected.
    """
    decision = ReviewDecision.objects.create(
        task=task, reviewed_revision=reviewed, result_revision=result if result is not None else (
            reviewed if kind in APPROVING_KINDS else None),
        kind=kind, reviewer=reviewer if getattr(reviewer, "pk", None) else None, annotator_id=reviewed.author_id,
        comment=comment)
    fields = ["status", "updated_at"]
    if kind in APPROVING_KINDS:
        curated = decision.result_revision
        if curated.status != RevisionStatus.APPROVED:
            curated.status = RevisionStatus.APPROVED
            curated.save(update_fields=["status"])
        revision_curated.send(sender=ReviewDecision, revision=curated)
        task.status = TaskStatus.DONE
    elif kind == DecisionKind.RETURN:
        reviewed.status = RevisionStatus.RETURNED
        reviewed.save(update_fields=["status"])
        task.status = TaskStatus.RETURNED
        task.assignee_id = reviewed.author_id
        fields.append("assignee")
    elif kind == DecisionKind.CONFIRM_REJECT:
        task.status = TaskStatus.REJECTED
    task.save(update_fields=fields)
    logger.info("%s: %s by %s", task, kind, reviewer or "the system")
    return decision


def route_closed(task: AnnotationTask, revision: MaskRevision, action_kind: str) -> None:
    """Send a task just closed by an annotator (status in review) to a reviewer or approve it automatically.

    Rejections always go to a reviewer. A task in the project's double-reading sample opens again for
    a second reader after its first reading; when the second is in, a pair below the agreement
    threshold waits for adjudication, an agreeing pair goes on as a single reading would.
    Accepted proposals that qualify are auto-approved; of the rest, the project's
    ``review_fraction`` is reviewed and the others approved without review.
    """
    if action_kind == TaskActionKind.REJECT:
        return
    policy = policy_for(task.project_id)
    pair = DoubleRead.objects.filter(task=task).select_related("first_revision").first()
    if pair is None and in_double_read_sample(task, policy.double_read_fraction):
        DoubleRead.objects.create(task=task, first_revision=revision)
        task.status, task.assignee = TaskStatus.OPEN, None  # open again for a second, blinded reader
        task.save(update_fields=["status", "assignee", "updated_at"])
        logger.info("%s: first reading in (revision %s); open for a second reader", task, revision.pk)
        return
    if pair is not None and pair.status == DoubleReadStatus.AWAITING_SECOND:
        if compare_readings(pair, revision, policy.agreement_threshold).status == DoubleReadStatus.ADJUDICATION:
            return  # stays in review: a reviewer adjudicates
    if action_kind == TaskActionKind.ACCEPT and auto_approvable(revision, policy):
        decide(task, revision, DecisionKind.AUTO_APPROVE)
    elif not in_review_sample(task, policy.review_fraction):
        decide(task, revision, DecisionKind.SAMPLED_OUT)
