"""REST endpoints of the annotator workflow (contract: docs/viewer-api.md), thin over :mod:`annotation.workflow`.

``/api/annotation/tasks/`` (queue), ``tasks/<id>/`` (task payload), ``claim``/``release`` (lease),
``draft`` (GET/PUT), ``submit``, ``accept`` and ``reject``. Domain errors become JSON
``{"detail": ...}`` with 400/403/409/423; a 409 also names ``current_revision``.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from imaging.serializers import InstanceSerializer

from . import workflow
from .labelmaps import LabelMapError
from .services import TargetMismatchError
from .review.services import latest_return
from .task_models import AnnotationTask, TaskAction, TaskStatus

logger = logging.getLogger(__name__)


class MaskBodyParser(BaseParser):
    """``application/octet-stream`` mask uploads: the body as bytes, still encoded (gzip / rle-v1)."""

    media_type = "application/octet-stream"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> bytes:
        return stream.read() if stream is not None else b""


def _body(request: Request) -> bytes:
    """The raw upload body (parsed once by :class:`MaskBodyParser`; Django's CSRF check may parse first)."""
    data = request.data
    if not isinstance(data, bytes | bytearray):
        raise workflow.MaskUploadError("send the mask as application/octet-stream")
    return bytes(data)


def _error(status_code: int, detail: str, **extra: Any) -> Response:
    return Response({"detail": detail, **extra}, status=status_code)


def _domain_errors(view: Callable[..., Response | HttpResponse]) -> Callable[..., Response | HttpResponse]:
    """Turn workflow and label-map errors into JSON answers a person can act on."""

    def wrapped(request: Request, *args: Any, **kwargs: Any) -> Response | HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except workflow.TaskConflictError as exc:
            return _error(status.HTTP_409_CONFLICT, str(exc), current_revision=exc.current_revision,
                          saved_by_you=exc.saved_by_you)
        except workflow.WorkflowError as exc:
            return _error(exc.status, str(exc))
        except (LabelMapError, TargetMismatchError) as exc:
            return _error(status.HTTP_400_BAD_REQUEST, str(exc))
        except RequestDataTooBig:
            return _error(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                          "The mask upload is too large; send it gzip-compressed or only the changed slices.")

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _task(request: Request, task_id: int) -> AnnotationTask:
    """The task if the user is a member of its project (404 otherwise: no existence leak)."""
    return get_object_or_404(workflow.tasks_for(request.user).select_related("series__study", "assignee", "claimed_by"),
                             pk=task_id)


def _parent(value: Any) -> int | None:
    if value is None or value == "none" or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise workflow.MaskUploadError(f"the parent revision must be a revision id or 'none', got {value!r}") from exc


def _seconds(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise workflow.MaskUploadError(f"time spent must be a number of seconds, got {value!r}") from exc


def _upload(request: Request, task: AnnotationTask) -> workflow.MaskUpload:
    """Parse a mask upload (headers + body) for ``task``."""
    if request.headers.get("X-Dtype", "uint8") != "uint8":
        raise workflow.MaskUploadError("X-Dtype must be uint8")
    shape = workflow.parse_shape(request.headers.get("X-Shape"))
    expected_shape = workflow.task_shape(task)
    if shape != expected_shape:
        raise workflow.MaskUploadError(f"the mask shape {shape} does not match the task's {expected_shape}")
    slices = workflow.parse_slices(request.headers.get("X-Slices"), shape[0])
    count = len(slices) if slices is not None else shape[0]
    encoding = request.headers.get("Content-Encoding") or request.headers.get("X-Mask-Encoding") or "identity"
    data, gzip_body = workflow.decode_upload(_body(request), encoding.strip().lower(), count * shape[1] * shape[2])
    return workflow.MaskUpload(shape=shape, data=data, slices=slices,
                               comment=unquote(request.headers.get("X-Comment", ""))[:2000],
                               time_spent_s=_seconds(request.headers.get("X-Time-Spent")), gzip_body=gzip_body)


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _action_of(revision: Any) -> dict[str, Any]:
    """The accept/submit/reject that created ``revision`` (``action`` null for a model proposal) and why."""
    try:
        action = revision.task_action  # joined by latest_revision(details=True)
    except TaskAction.DoesNotExist:
        action = None
    if action is None:
        return {"action": None, "reason": None, "reason_text": ""}
    return {"action": action.kind, "reason": action.get_reason_display() if action.reason else None,
            "reason_text": action.reason_text}


def task_payload(task: AnnotationTask, user: Any) -> dict[str, Any]:
    """The ``TaskPayload`` JSON of docs/viewer-api.md (plus lease and permissions)."""
    latest = workflow.working_revision(task, details=True)
    draft = workflow.get_draft(task, user)
    serializer = InstanceSerializer()
    instances = workflow.task_instances(task, latest)
    for instance in instances:
        instance.series = task.series  # the WADO URL needs the study; avoid a query per instance
    return {
        "id": task.pk,
        "project": task.project_id,
        "status": workflow.live_status(task),
        "modality": task.series.modality,
        "instances": [{"sop_instance_uid": i.sop_instance_uid, "url": serializer.get_wado_url(i)} for i in instances],
        "shape": list(workflow.task_shape(task)),
        "revision": None if latest is None else {
            "id": latest.pk, "number": latest.number, "kind": latest.method or latest.source,
            "created_at": _iso(latest.created_at),
            "author": latest.author.get_username() if latest.author_id else None,
            **_action_of(latest),
        },
        "draft": None if draft is None else {
            "parent_revision": draft.parent_revision_id, "saved_at": _iso(draft.saved_at), "slices": draft.slices,
        },
        "claimed_by": task.claimed_by.get_username() if task.claimed_by_id else None,
        "lease_expires_at": _iso(task.lease_expires_at) if workflow.lease_is_active(task) else None,
        "lease_seconds": workflow.lease_seconds(),
        "reject_reasons": [{"code": c, "label": label} for c, label in workflow.reject_reasons()],
        # what the CT reader corrected (missing slices, gantry tilt): the annotator should know
        "series_warnings": list((latest.geometry or {}).get("warnings", [])) if latest is not None else [],
        "returned": _returned(task),
        "kept_drafts": [{"revision_id": k.revision_id, "revision_number": k.revision.number,
                         "saved_over_by": k.saved_over_by.get_username() if k.saved_over_by_id else None,
                         "at": _iso(k.created_at)} for k in workflow.untold_kept_drafts(user, task)],
    }


def _returned(task: AnnotationTask) -> dict[str, Any] | None:
    """The reviewer's comment while the task is returned to its annotator (shown on their page)."""
    if task.status != TaskStatus.RETURNED:
        return None
    decision = latest_return(task)
    if decision is None:
        return None
    return {"comment": decision.comment, "at": _iso(decision.created_at),
            "reviewer": decision.reviewer.get_username() if decision.reviewer_id else None}


def _saved(outcome: workflow.SaveOutcome, code: int) -> Response:
    return Response({"revision_id": outcome.revision.pk if outcome.revision else None,
                     "revision_number": outcome.revision.number if outcome.revision else None,
                     "saved_at": _iso(outcome.saved_at)}, status=code)


@extend_schema(operation_id="annotation_queue", responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
@_domain_errors
def queue(request: Request) -> Response:
    """The caller's queue: editable tasks ordered by QC flags, then model confidence (least first)."""
    return Response([{"id": item.task.pk, "status": item.status, "modality": item.modality, "flags": item.flags,
                      "confidence": item.confidence, "claimed_by_me": item.mine, "drafts_by": item.drafts_by}
                     for item in workflow.queue_for(request.user)])


@extend_schema(operation_id="annotation_task_detail", responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
@_domain_errors
def task_detail(request: Request, task_id: int) -> Response:
    """The task: instances in slice order, mask shape, latest revision, the caller's draft, lease."""
    return Response(task_payload(_task(request, task_id), request.user))


@extend_schema(operation_id="annotation_task_claim", request=None, responses={200: OpenApiTypes.OBJECT})
@api_view(["POST"])
@_domain_errors
def claim(request: Request, task_id: int) -> Response:
    """Claim the task (or renew the caller's lease); 423 while someone else holds it."""
    task = _task(request, task_id)
    claimed = workflow.claim(task.pk, request.user)
    for name in ("status", "claimed_by", "claimed_at", "lease_expires_at", "updated_at"):  # the locked row's new lease
        setattr(task, name, getattr(claimed, name))
    return Response(task_payload(task, request.user))


@extend_schema(operation_id="annotation_task_release", request=None, responses={200: OpenApiTypes.OBJECT})
@api_view(["POST"])
@_domain_errors
def release(request: Request, task_id: int) -> Response:
    """Give the caller's claim up (leaving the page without finishing)."""
    _task(request, task_id)
    workflow.release(task_id, request.user)
    return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(methods=["GET"], operation_id="annotation_task_draft_read", responses={200: OpenApiTypes.BINARY})
@extend_schema(methods=["PUT"], operation_id="annotation_task_draft_save", request=OpenApiTypes.BINARY,
               responses={200: OpenApiTypes.OBJECT})
@api_view(["GET", "PUT"])
@parser_classes([MaskBodyParser, JSONParser])
@_domain_errors
def draft(request: Request, task_id: int) -> Response | HttpResponse:
    """GET: the caller's draft mask (404 when none); PUT: autosave it (409 when the parent is stale)."""
    task = _task(request, task_id)
    if request.method == "PUT":
        outcome = workflow.save_draft(task.pk, request.user, _parent(request.headers.get("X-Parent-Revision")),
                                      _upload(request, task))
        return _saved(outcome, status.HTTP_200_OK)
    stored = workflow.get_draft(task, request.user)
    if stored is None:
        return _error(status.HTTP_404_NOT_FOUND, "You have no draft for this task.")
    body = bytes(stored.data)
    response = HttpResponse(content_type="application/octet-stream")
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response["Content-Encoding"] = "gzip"
    else:
        body = gzip.decompress(body)
    response.content = body
    response["X-Shape"] = ",".join(str(n) for n in stored.shape)
    response["X-Dtype"] = "uint8"
    response["X-Parent-Revision"] = str(stored.parent_revision_id) if stored.parent_revision_id else "none"
    response["Cache-Control"] = "no-store"
    return response


@extend_schema(operation_id="annotation_task_submit", request=OpenApiTypes.BINARY, responses={200: OpenApiTypes.OBJECT})
@api_view(["POST"])
@parser_classes([MaskBodyParser, JSONParser])
@_domain_errors
def submit(request: Request, task_id: int) -> Response:
    """Store the caller's edited mask as a new revision and send the task to review."""
    task = _task(request, task_id)
    outcome = workflow.submit(task.pk, request.user, _parent(request.headers.get("X-Parent-Revision")),
                              _upload(request, task))
    return _saved(outcome, status.HTTP_201_CREATED)


def _json(request: Request) -> dict[str, Any]:
    data = request.data
    if not isinstance(data, dict):
        raise workflow.MaskUploadError("the body must be a JSON object")
    return data


@extend_schema(operation_id="annotation_task_accept", request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
@api_view(["POST"])
@_domain_errors
def accept(request: Request, task_id: int) -> Response:
    """Accept the latest revision unchanged (body ``{"parent_revision": id}``)."""
    task = _task(request, task_id)
    data = _json(request)
    outcome = workflow.accept(task.pk, request.user, _parent(data.get("parent_revision")), _seconds(data.get("time_spent")))
    return _saved(outcome, status.HTTP_201_CREATED)


@extend_schema(operation_id="annotation_task_reject", request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
@api_view(["POST"])
@_domain_errors
def reject(request: Request, task_id: int) -> Response:
    """Reject with a reason code and, for ``other``, a text (body ``{"parent_revision", "reason", "text"}``)."""
    task = _task(request, task_id)
    data = _json(request)
    outcome = workflow.reject(task.pk, request.user, _parent(data.get("parent_revision")), str(data.get("reason", "")),
                              str(data.get("text", "")), _seconds(data.get("time_spent")))
    return _saved(outcome, status.HTTP_201_CREATED)
