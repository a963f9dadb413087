"""The reviewer's side of the workflow: the review queue, approve, return with a comment, edit and approve.

Views (:mod:`annotation.review.api`, :mod:`workbench.views`) stay thin over these functions. Every
action names the revision it judged; when that is no longer the task's latest, or the task left
review in the meantime, it is refused (409) so that two reviewers never decide twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import F, OuterRef, QuerySet, Subquery

from accounts.models import Role
from accounts.permissions import has_role, project_ids_for
from modeling import agreement

from .. import workflow
from ..models import MaskRevision, RevisionStatus
from ..task_models import AnnotationTask, TaskAction, TaskStatus
from . import measures, routing
from .models import DecisionKind, DoubleRead, DoubleReadStatus, EditMeasure, ReviewDecision

logger = logging.getLogger(__name__)

#: Who may review (approve, return, edit and approve) and see the review queue.
REVIEW_ROLES: frozenset[str] = frozenset({Role.REVIEWER, Role.ADMIN})
#: Longest reviewer comment kept (characters).
MAX_COMMENT = 4000


class NotInReviewError(workflow.WorkflowError):
    """The task is not (or no longer) waiting for review."""

    status = 409


def reviewable_tasks(user: Any) -> QuerySet:
    """Tasks of the projects where ``user`` reviews."""
    return AnnotationTask.objects.filter(project_id__in=project_ids_for(user, REVIEW_ROLES))


def check_reviewer(task: AnnotationTask, user: Any) -> None:
    """Raise :class:`workflow.TaskForbiddenError` unless ``user`` reviews the task's project."""
    if not has_role(user, task.project_id, REVIEW_ROLES):
        raise workflow.TaskForbiddenError("Only the project's reviewers and admins can review tasks.")


# ------------------------------------------------------------------------------ queue


@dataclass
class ReviewItem:
    """One row of the review queue."""

    task: AnnotationTask
    revision_id: int
    revision_status: str
    annotator: str | None
    flags: list[str] = field(default_factory=list)
    dice: float | None = None
    changed_fraction: float | None = None
    submitted_at: Any = None


def review_queue(user: Any, project_id: int | None = None, limit: int = 500) -> list[ReviewItem]:
    """Tasks waiting for review in the user's projects: most QC flags first, then the masks that moved
    furthest from the model's proposal (lowest Dice), then the oldest.
    """
    from quality.models import QCFlag  # downstream: read-only use of the stored flags

    latest = MaskRevision.objects.filter(target_key=OuterRef("target_key")).order_by("-number")
    tasks = reviewable_tasks(user).filter(status=TaskStatus.IN_REVIEW)
    if project_id is not None:
        tasks = tasks.filter(project_id=project_id)
    tasks = list(
        tasks.annotate(
            final_id=Subquery(latest.values("pk")[:1]), final_status=Subquery(latest.values("status")[:1]),
            final_author=Subquery(latest.values("author__username")[:1]),
            final_at=Subquery(latest.values("created_at")[:1]),
            flagged=Subquery(latest.values("qc__flagged_count")[:1]),
            dice=Subquery(latest.values("edit_measure__dice")[:1]),
            changed=Subquery(latest.values("edit_measure__changed_fraction")[:1]))
        .select_related("series__study__patient", "project")
        .order_by(F("flagged").desc(nulls_last=True), F("dice").asc(nulls_last=True), "final_at", "id")[:limit])
    flags: dict[int, list[str]] = {}
    for revision_id, name in QCFlag.objects.filter(
            revision_id__in=[t.final_id for t in tasks], flagged=True).values_list("revision_id", "name"):
        flags.setdefault(revision_id, []).append(name)
    return [ReviewItem(task=t, revision_id=t.final_id, revision_status=t.final_status, annotator=t.final_author,
                       flags=flags.get(t.final_id, []), dice=t.dice, changed_fraction=t.changed,
                       submitted_at=t.final_at) for t in tasks]


# ------------------------------------------------------------------------------ one task


def proposal_of(task: AnnotationTask, final: MaskRevision | None) -> MaskRevision | None:
    """The model proposal the final mask is compared with (the one its edit measure used)."""
    measure = EditMeasure.objects.filter(revision=final).select_related("proposal").first() if final else None
    if measure is not None:
        return measure.proposal
    return measures.latest_proposal(task.target_key, final.number if final else None)


def difference(task: AnnotationTask) -> np.ndarray:
    """``(D, H, W)`` uint8 of the latest revision against its proposal: 1 added lung, 2 removed lung, 0 same.

    Raises:
        NotInReviewError: the task has no person's revision or no proposal to compare with.
    """
    final = workflow.latest_revision(task)
    proposal = proposal_of(task, final)
    if final is None or proposal is None:
        raise NotInReviewError("This task has no model proposal and final mask to compare.")
    return agreement.difference(workflow.revision_volume(proposal), workflow.revision_volume(final))


def _locked_for_review(task_id: int, user: Any, revision_id: int | None) -> tuple[AnnotationTask, MaskRevision]:
    task = AnnotationTask.objects.select_for_update().get(pk=task_id)
    check_reviewer(task, user)
    if task.status != TaskStatus.IN_REVIEW:
        raise NotInReviewError(f"This task is {task.get_status_display().lower()}, not waiting for review; "
                               "reload the review queue.")
    latest = workflow.latest_revision(task)
    if latest is None or latest.pk != revision_id:
        raise workflow.TaskConflictError(
            "The task changed since you opened it (a newer revision exists); reload it before deciding.",
            latest.pk if latest is not None else None)
    return task, latest


def pending_adjudication(task: AnnotationTask) -> DoubleRead | None:
    """The task's double reading when it waits for adjudication."""
    return (DoubleRead.objects.filter(task=task, status=DoubleReadStatus.ADJUDICATION)
            .select_related("first_revision__author", "second_revision__author").first())


def _adjudicated(task: AnnotationTask) -> None:
    DoubleRead.objects.filter(task=task, status=DoubleReadStatus.ADJUDICATION).update(
        status=DoubleReadStatus.ADJUDICATED)


def approve(task_id: int, user: Any, revision_id: int | None) -> ReviewDecision:
    """Approve the judged revision (it becomes curated; a rejection is confirmed instead). On a double-read
    pair waiting for adjudication this chooses the second reading (see :func:`adjudicate`).

    Raises:
        TaskForbiddenError, NotInReviewError, TaskConflictError.
    """
    with transaction.atomic():
        task, latest = _locked_for_review(task_id, user, revision_id)
        if pending_adjudication(task) is not None:
            _adjudicated(task)
            return routing.decide(task, latest, DecisionKind.ADJUDICATE, user)
        kind = DecisionKind.CONFIRM_REJECT if latest.status == RevisionStatus.REJECTED else DecisionKind.APPROVE
        return routing.decide(task, latest, kind, user)


def adjudicate(task_id: int, user: Any, chosen_id: int | None, comment: str = "") -> ReviewDecision:
    """Settle a double-read pair below the agreement threshold by choosing one reading (it becomes curated).

    Raises:
        TaskForbiddenError, NotInReviewError (no pair waiting), MaskUploadError (not one of the two readings).
    """
    with transaction.atomic():
        task = AnnotationTask.objects.select_for_update().get(pk=task_id)
        check_reviewer(task, user)
        pair = pending_adjudication(task)
        if pair is None or task.status != TaskStatus.IN_REVIEW:
            raise NotInReviewError("This task has no double reading waiting for adjudication; reload it.")
        readings = {pair.first_revision_id: pair.first_revision, pair.second_revision_id: pair.second_revision}
        if chosen_id not in readings:
            raise workflow.MaskUploadError("Choose one of the two readings (their revision ids), or edit and approve.")
        _adjudicated(task)
        chosen = readings[chosen_id]
        return routing.decide(task, pair.second_revision, DecisionKind.ADJUDICATE, user, comment.strip()[:MAX_COMMENT],
                              result=chosen)


def return_to_annotator(task_id: int, user: Any, revision_id: int | None, comment: str) -> ReviewDecision:
    """Send the task back to the judged revision's author with a comment (required).

    Raises:
        MaskUploadError: no comment. TaskForbiddenError, NotInReviewError, TaskConflictError.
    """
    comment = (comment or "").strip()[:MAX_COMMENT]
    if not comment:
        raise workflow.MaskUploadError("Say what the annotator should change: a return needs a comment.")
    with transaction.atomic():
        task, latest = _locked_for_review(task_id, user, revision_id)
        if latest.author_id is None:
            raise NotInReviewError("The latest revision has no author to return it to.")
        if pending_adjudication(task) is not None:
            raise NotInReviewError("A double reading below the agreement threshold is adjudicated: choose a reading "
                                   "or edit and approve.")
        return routing.decide(task, latest, DecisionKind.RETURN, user, comment)


def edit_and_approve(task_id: int, user: Any, revision_id: int | None, upload: workflow.MaskUpload) -> ReviewDecision:
    """Store the reviewer's corrected mask as a new, curated revision (its parent: the judged one).

    Raises:
        MaskUploadError, TaskForbiddenError, NotInReviewError, TaskConflictError.
    """
    with transaction.atomic():
        task, latest = _locked_for_review(task_id, user, revision_id)
        mask = workflow.build_mask(upload, workflow.task_shape(task), workflow.revision_volume(latest))
        revision = workflow.store_person_revision(task, user, latest, mask, RevisionStatus.APPROVED, "review",
                                                  upload.comment)
        _adjudicated(task)
        return routing.decide(task, latest, DecisionKind.EDIT_APPROVE, user, upload.comment, result=revision)


def latest_return(task: AnnotationTask) -> ReviewDecision | None:
    """The last time the task was returned to an annotator (its comment is shown on their page)."""
    return (ReviewDecision.objects.filter(task=task, kind=DecisionKind.RETURN).select_related("reviewer")
            .order_by("-id").first())


def history(task: AnnotationTask) -> list[dict[str, Any]]:
    """Annotator actions and review decisions of the task, oldest first (for the review page)."""
    events: list[dict[str, Any]] = []
    for action in TaskAction.objects.filter(task=task).select_related("author", "revision"):
        events.append({"at": action.created_at, "who": action.author.get_username(), "what": action.kind,
                       "revision": action.revision.number, "comment": action.revision.note})
    for decision in ReviewDecision.objects.filter(task=task).select_related("reviewer", "reviewed_revision"):
        events.append({"at": decision.created_at,
                       "who": decision.reviewer.get_username() if decision.reviewer_id else "system",
                       "what": decision.kind, "revision": decision.reviewed_revision.number,
                       "comment": decision.comment})
    return sorted(events, key=lambda e: e["at"])
