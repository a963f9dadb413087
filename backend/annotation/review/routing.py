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
from .models import APPROVING_KINDS, DecisionKind, ReviewDecision, ReviewPolicy

logger = logging.getLogger(__name__)


def policy_for(project_id: int) -> ReviewPolicy:
    """The project's review policy (created with the defaults on first use)."""
    policy, _ = ReviewPolicy.objects.get_or_create(project_id=project_id)
    return policy


def sample_value(project_id: int, task_id: int) -> float:
    """A stable pseudo-random number in [0, 1) per task: the same task is always in or out of the sample."""
    digest = hashlib.sha256(f"review:{project_id}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_review_sample(task: AnnotationTask, fraction: float) -> bool:
    """Whether the task is among the ``fraction`` of tasks a reviewer sees."""
    return sample_value(task.project_id, task.pk) < fraction


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

    Rejections always go to a reviewer; accepted proposals that qualify are auto-approved; of the
    rest, the project's ``review_fraction`` is reviewed and the others approved without review.
    """
    if action_kind == TaskActionKind.REJECT:
        return
    policy = policy_for(task.project_id)
    if action_kind == TaskActionKind.ACCEPT and auto_approvable(revision, policy):
        decide(task, revision, DecisionKind.AUTO_APPROVE)
    elif not in_review_sample(task, policy.review_fraction):
        decide(task, revision, DecisionKind.SAMPLED_OUT)
