"""REST endpoints of the review stage under ``/api/review/``, thin over :mod:`annotation.review.services`.

``queue/`` (tasks waiting for review), ``tasks/<id>/`` (what the review page shows), ``tasks/<id>/difference``
(raw added/removed map), ``approve``, ``return``, ``edit-approve`` and ``policies/<project>/``
(the project's review settings; project admins change them, with an audit record).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit
from accounts.permissions import MANAGE_ROLES, has_role, project_ids_for
from imaging.serializers import InstanceSerializer

from .. import workflow
from ..models import MaskRevision
from ..tasks_api import MaskBodyParser, _domain_errors, _iso, _json, _parent, _upload
from . import routing, services
from .models import EditMeasure, ReviewDecision
from .serializers import ReviewPolicySerializer

logger = logging.getLogger(__name__)


def _task(request: Request, task_id: int) -> Any:
    """The task if the user is a member of its project (404 otherwise: no existence leak)."""
    return get_object_or_404(workflow.tasks_for(request.user).select_related("series__study"), pk=task_id)


def _revision(revision: MaskRevision | None) -> dict[str, Any] | None:
    if revision is None:
        return None
    return {"id": revision.pk, "number": revision.number, "status": revision.status, "source": revision.source,
            "method": revision.method, "author": revision.author.get_username() if revision.author_id else None,
            "model": revision.model_version.name if revision.model_version_id else None,
            "confidence": revision.confidence, "note": revision.note, "created_at": _iso(revision.created_at)}


def _measure(revision: MaskRevision | None) -> dict[str, Any] | None:
    measure = EditMeasure.objects.filter(revision=revision).first() if revision is not None else None
    if measure is None:
        return None
    return {name: getattr(measure, name) for name in (
        "added", "removed", "relabelled", "changed_fraction", "dice", "dice_right", "dice_left", "hd95",
        "hd95_right", "hd95_left", "hd95_unit")}


def review_payload(task: Any, user: Any) -> dict[str, Any]:
    """What the review page needs: images, the final revision, the proposal, edit measure, QC flags, history."""
    from quality.models import QCFlag  # downstream: read-only use of the stored flags

    final = workflow.latest_revision(task)
    proposal = services.proposal_of(task, final)
    instances = workflow.task_instances(task, final)
    serializer = InstanceSerializer()
    for instance in instances:
        instance.series = task.series
    flags = QCFlag.objects.filter(revision=final, flagged=True) if final is not None else QCFlag.objects.none()
    return {
        "id": task.pk, "project": task.project_id, "status": task.status, "modality": task.series.modality,
        "instances": [{"sop_instance_uid": i.sop_instance_uid, "url": serializer.get_wado_url(i)} for i in instances],
        "shape": list(workflow.task_shape(task)),
        "final": _revision(final), "proposal": _revision(proposal), "measure": _measure(final),
        "flags": [{"name": f.name, "message": f.message} for f in flags],
        "history": [{**e, "at": _iso(e["at"])} for e in services.history(task)],
        "double_read": _pair(services.pending_adjudication(task)),
        "can_review": has_role(user, task.project_id, services.REVIEW_ROLES),
    }


def _pair(pair: Any) -> dict[str, Any] | None:
    """A double-read pair waiting for adjudication: both readings and their agreement."""
    if pair is None:
        return None
    return {"status": pair.status, "first": _revision(pair.first_revision), "second": _revision(pair.second_revision),
            "dice": pair.dice, "dice_right": pair.dice_right, "dice_left": pair.dice_left,
            "hd95_right": pair.hd95_right, "hd95_left": pair.hd95_left, "hd95_unit": pair.hd95_unit,
            "threshold": pair.threshold}


def _decision(decision: ReviewDecision, code: int = status.HTTP_201_CREATED) -> Response:
    task = decision.task
    return Response({"decision": decision.kind, "task_status": task.status,
                     "curated_revision": decision.result_revision_id, "comment": decision.comment}, status=code)


@extend_schema(operation_id="review_queue", responses={200: OpenApiTypes.OBJECT},
               parameters=[OpenApiParameter("project", int, description="only this project")])
@api_view(["GET"])
@_domain_errors
def queue(request: Request) -> Response:
    """Tasks waiting for review in the caller's projects: QC-flagged first, then the most edited (lowest Dice)."""
    project = request.query_params.get("project")
    if project is not None and not project.isdigit():
        raise ValidationError({"project": "must be a project id"})
    items = services.review_queue(request.user, int(project) if project else None)
    return Response([{"id": i.task.pk, "project": i.task.project_id, "modality": i.task.series.modality,
                      "revision": i.revision_id, "revision_status": i.revision_status, "annotator": i.annotator,
                      "flags": i.flags, "dice": i.dice, "changed_fraction": i.changed_fraction,
                      "submitted_at": _iso(i.submitted_at)} for i in items])


@extend_schema(operation_id="review_task", responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
@_domain_errors
def task_detail(request: Request, task_id: int) -> Response:
    """The review page's data: images, final revision, proposal, edit measure, QC flags, history."""
    task = _task(request, task_id)
    services.check_reviewer(task, request.user)
    return Response(review_payload(task, request.user))


@extend_schema(operation_id="review_task_difference", responses={200: OpenApiTypes.BINARY})
@api_view(["GET"])
@_domain_errors
def difference(request: Request, task_id: int) -> HttpResponse:
    """Raw C-order uint8 ``(D, H, W)``: 1 lung added, 2 lung removed against the proposal, 0 unchanged."""
    task = _task(request, task_id)
    services.check_reviewer(task, request.user)
    diff = services.difference(task)
    response = HttpResponse(diff.tobytes(order="C"), content_type="application/octet-stream")
    response["X-Shape"] = ",".join(str(n) for n in diff.shape)
    response["X-Dtype"] = "uint8"
    response["Cache-Control"] = "no-store"
    return response


@extend_schema(operation_id="review_task_approve", request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
@api_view(["POST"])
@_domain_errors
def approve(request: Request, task_id: int) -> Response:
    """Approve the judged revision (body ``{"revision": id}``): it becomes curated."""
    task = _task(request, task_id)
    return _decision(services.approve(task.pk, request.user, _parent(_json(request).get("revision"))))


@extend_schema(operation_id="review_task_return", request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
@api_view(["POST"])
@_domain_errors
def return_task(request: Request, task_id: int) -> Response:
    """Return the task to its annotator with a comment (body ``{"revision": id, "comment": "..."}``)."""
    task = _task(request, task_id)
    data = _json(request)
    return _decision(services.return_to_annotator(task.pk, request.user, _parent(data.get("revision")),
                                                  str(data.get("comment", ""))))


@extend_schema(operation_id="review_task_edit_approve", request=OpenApiTypes.BINARY,
               responses={201: OpenApiTypes.OBJECT})
@api_view(["POST"])
@parser_classes([MaskBodyParser, JSONParser])
@_domain_errors
def edit_approve(request: Request, task_id: int) -> Response:
    """Store the reviewer's corrected mask (as a submit upload; ``X-Parent-Revision`` = judged revision), curated."""
    task = _task(request, task_id)
    services.check_reviewer(task, request.user)
    upload = _upload(request, task)
    return _decision(services.edit_and_approve(task.pk, request.user,
                                               _parent(request.headers.get("X-Parent-Revision")), upload))


@extend_schema(methods=["GET"], operation_id="review_policy_read", responses={200: ReviewPolicySerializer})
@extend_schema(methods=["PUT"], operation_id="review_policy_update", request=ReviewPolicySerializer,
               responses={200: ReviewPolicySerializer})
@extend_schema(methods=["PATCH"], operation_id="review_policy_partial_update", request=ReviewPolicySerializer,
               responses={200: ReviewPolicySerializer})
@api_view(["GET", "PUT", "PATCH"])
def policy(request: Request, project_id: int) -> Response:
    """The project's review policy; project admins change it (each change is written to the audit log)."""
    if not project_ids_for(request.user).filter(project_id=project_id).exists():
        return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    current = routing.policy_for(project_id)
    if request.method == "GET":
        return Response(ReviewPolicySerializer(current).data)
    if not has_role(request.user, project_id, MANAGE_ROLES):
        return Response({"detail": "Only project admins can change the review settings."},
                        status=status.HTTP_403_FORBIDDEN)
    serializer = ReviewPolicySerializer(current, data=request.data, partial=request.method == "PATCH")
    serializer.is_valid(raise_exception=True)
    with transaction.atomic():
        before = audit.snapshot(current, list(current.SETTINGS))
        updated = serializer.save()
        changed_before, changed_after = audit.changed(before, audit.snapshot(updated, list(updated.SETTINGS)))
        if changed_after:
            audit.record(request.user, "project.review_policy.update", updated, project_id=project_id,
                         before=changed_before, after=changed_after)
    return Response(ReviewPolicySerializer(updated).data)


@extend_schema(operation_id="review_task_adjudicate", request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
@api_view(["POST"])
@_domain_errors
def adjudicate(request: Request, task_id: int) -> Response:
    """Settle a double reading below the agreement threshold: body ``{"revision": <first or second reading>}``."""
    task = _task(request, task_id)
    data = _json(request)
    return _decision(services.adjudicate(task.pk, request.user, _parent(data.get("revision")),
                                         str(data.get("comment", ""))))
