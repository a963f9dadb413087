"""Annotator workflow services: task creation, claiming with a lease, drafts, accept/submit/reject, the queue.

Views (:mod:`annotation.tasks_api`, :mod:`workbench.views`) stay thin over these functions.
Masks are handled as ``(D, H, W)`` uint8 arrays (``D = 1`` for an X-ray image) in the slice order
of :func:`task_instances`; revisions store X-ray label maps as ``(H, W)``.

Every write names the revision it was made from (``parent_id``); when that is no longer the
task's latest revision the write is refused with :class:`TaskConflictError` (HTTP 409), so an
edit made on stale data never silently replaces someone else's work.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.models import Role
from accounts.permissions import has_role, project_ids_for
from imaging.models import Instance

from . import labelmaps, services
from .models import MaskRevision, RevisionSource, RevisionStatus
from .task_models import AnnotationTask, Draft, KeptDraft, RejectReason, TaskAction, TaskActionKind, TaskStatus

logger = logging.getLogger(__name__)

#: Who may edit masks (claim tasks, save drafts, accept/submit/reject).
ANNOTATE_ROLES: frozenset[str] = frozenset({Role.ANNOTATOR, Role.REVIEWER, Role.ADMIN})
#: Task states in which annotators may still edit the mask (after a submit: only once it is returned).
EDITABLE_STATUSES: frozenset[str] = frozenset({TaskStatus.OPEN, TaskStatus.IN_PROGRESS, TaskStatus.RETURNED})
#: Longest time an action may claim to have taken (s); larger client values are clipped.
MAX_TIME_SPENT_S = 24 * 3600.0
#: A client's gzip body is stored as the draft when it is at least this many times smaller than the mask.
KEEP_GZIP_MIN_RATIO = 8


def lease_seconds() -> int:
    """How long a claim lasts without activity (``PLEURA_TASK_LEASE_S``, default 30 min)."""
    return int(getattr(settings, "PLEURA_TASK_LEASE_S", 1800))


# ------------------------------------------------------------------------------ errors


class WorkflowError(Exception):
    """Base of the workflow's domain errors; ``status`` is the HTTP status the API answers with."""

    status = 400


class MaskUploadError(WorkflowError):
    """An uploaded mask is malformed (encoding, shape, values, slice list)."""


class TaskForbiddenError(WorkflowError):
    """The user may read the task but not change it (role, assignment, closed task)."""

    status = 403


class TaskLockedError(WorkflowError):
    """Someone else holds the task's lease."""

    status = 423


class TaskConflictError(WorkflowError):
    """The write was made from a revision that is no longer the task's latest."""

    status = 409

    def __init__(self, message: str, current_revision: int | None, saved_by_you: bool = False) -> None:
        super().__init__(message)
        self.current_revision = current_revision
        #: The newer revision is the same user's (another tab or window), not someone else's.
        self.saved_by_you = saved_by_you


# ------------------------------------------------------------------------------ tasks


def ensure_task(revision: MaskRevision) -> AnnotationTask:
    """The task of a revision's target, created (open) when it does not exist yet."""
    task, created = AnnotationTask.objects.get_or_create(
        target_key=revision.target_key,
        defaults={"project_id": revision.project_id, "series_id": revision.series_id,
                  "instance_id": revision.instance_id},
    )
    if created:
        logger.info("created %s for %s", task, revision)
    return task


def on_revision_created(sender: Any, revision: MaskRevision, **kwargs: Any) -> None:
    """``annotation.signals.revision_created`` receiver: a model proposal opens a task for its target."""
    if revision.source == RevisionSource.MODEL:
        ensure_task(revision)


def backfill_tasks() -> int:
    """Create the missing tasks of targets that already have a model revision; returns how many."""
    existing = AnnotationTask.objects.filter(target_key=OuterRef("target_key"))
    created = 0
    for revision in (MaskRevision.objects.filter(source=RevisionSource.MODEL).annotate(has_task=Exists(existing))
                     .filter(has_task=False).order_by("target_key", "-number")):
        if not AnnotationTask.objects.filter(target_key=revision.target_key).exists():
            ensure_task(revision)
            created += 1
    return created


def tasks_for(user: Any) -> QuerySet:
    """Tasks of the projects the user is a member of (any role may read)."""
    return AnnotationTask.objects.filter(project_id__in=project_ids_for(user)).select_related("series", "instance")


def latest_revision(task: AnnotationTask, details: bool = False) -> MaskRevision | None:
    """The task's current revision (the newest that is not a side proposal), or ``None``; ``details``
    joins its author and task action (same rule as :func:`annotation.services.current_revision`)."""
    revisions = MaskRevision.objects.filter(target_key=task.target_key).exclude(status__in=MaskRevision.SIDE_STATUSES)
    if details:
        revisions = revisions.select_related("author", "task_action")
    return revisions.order_by("-number").first()


def blinded_reading(task: AnnotationTask) -> MaskRevision | None:
    """The first reading of a double-read task still waiting for its second reader (hidden from others)."""
    from .review.models import DoubleRead, DoubleReadStatus

    pair = (DoubleRead.objects.filter(task=task, status=DoubleReadStatus.AWAITING_SECOND)
            .select_related("first_revision__parent").first())
    return pair.first_revision if pair is not None else None


def working_revision(task: AnnotationTask, details: bool = False) -> MaskRevision | None:
    """The revision annotators start from: the latest, except during a double reading's second read, where
    it is what the first reader started from (the second reader never sees the first reading);
    ``details`` as in :func:`latest_revision`."""
    first = blinded_reading(task)
    return first.parent if first is not None else latest_revision(task, details)


def task_instances(task: AnnotationTask, latest: MaskRevision | None = None) -> list[Instance]:
    """The task's instances in mask slice order (one for an X-ray task)."""
    if task.instance_id is not None:
        return [task.instance]
    latest = latest if latest is not None else latest_revision(task)
    ids = (latest.geometry or {}).get("instance_ids") if latest is not None else None
    by_id = {i.pk: i for i in task.series.instances.all()}
    if ids and set(ids) == set(by_id):
        return [by_id[i] for i in ids]
    from modeling.inference import slice_order  # the proposal's own ordering (position along the normal)

    return [by_id[i] for i in slice_order(task.series)]


def task_shape(task: AnnotationTask) -> tuple[int, int, int]:
    """``(D, H, W)`` of the task's masks."""
    depth = 1 if task.instance_id is not None else task.series.num_instances
    return depth, task.series.rows, task.series.columns


class _VolumeCache:
    """Decoded label maps of recent revisions, least recently used out first, bounded in bytes.

    Safe because a revision never changes (append-only lineage; the stored file is checked against
    the recorded checksum, which is part of the key). Arrays are handed out read-only.
    """

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, revision: MaskRevision) -> np.ndarray:
        key = (revision.pk, revision.checksum)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        labels = services.read_labels(revision)
        labels.setflags(write=False)
        limit = int(getattr(settings, "PLEURA_REVISION_CACHE_BYTES", 128 * 1024 * 1024))
        if labels.nbytes <= limit:
            with self._lock:
                if key not in self._items:
                    self._items[key] = labels
                    self._bytes += labels.nbytes
                while self._bytes > limit:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes
        return labels


_volumes = _VolumeCache()


def revision_labels(revision: MaskRevision) -> np.ndarray:
    """A revision's label map as stored (``(H, W)`` or ``(D, H, W)``), read-only, decoded once per process.

    Raises:
        LabelMapError: the stored file is unreadable or does not match the recorded checksum.
    """
    return _volumes.get(revision)


def revision_volume(revision: MaskRevision) -> np.ndarray:
    """A revision's label map as a read-only ``(D, H, W)`` uint8 array (X-ray ``(H, W)`` → ``(1, H, W)``).

    Decoded once per process and kept while recently used (autosaves of a task read its parent each time).
    """
    labels = revision_labels(revision)
    return labels[None] if labels.ndim == 2 else labels


# ------------------------------------------------------------------------------ claims


def lease_is_active(task: AnnotationTask, now: dt.datetime | None = None) -> bool:
    """Whether someone holds the task's claim right now."""
    now = now or timezone.now()
    return task.claimed_by_id is not None and task.lease_expires_at is not None and task.lease_expires_at > now


def live_status(task: AnnotationTask, now: dt.datetime | None = None) -> str:
    """The task's status as it is now: "in progress" only while someone holds a live lease, else open."""
    if task.status == TaskStatus.IN_PROGRESS and not lease_is_active(task, now):
        return TaskStatus.OPEN
    return task.status


def _check_may_edit(task: AnnotationTask, user: Any) -> None:
    if not has_role(user, task.project_id, ANNOTATE_ROLES):
        raise TaskForbiddenError("Your role in this project does not allow editing masks; ask the project lead.")
    if task.assignee_id is not None and task.assignee_id != user.pk:
        raise TaskForbiddenError(f"This task is assigned to {task.assignee}; pick another one from your queue.")
    if task.status not in EDITABLE_STATUSES:
        raise TaskForbiddenError(f"This task is {task.get_status_display().lower()} and can no longer be edited.")
    first = blinded_reading(task)
    if first is not None and first.author_id == user.pk:
        raise TaskForbiddenError("You read this task already; a second annotator reads it independently.")


def _claim_locked(task: AnnotationTask, user: Any, now: dt.datetime) -> None:
    """Claim or renew the lease of a task whose row is locked by the caller."""
    _check_may_edit(task, user)
    if lease_is_active(task, now) and task.claimed_by_id != user.pk:
        until = timezone.localtime(task.lease_expires_at).strftime("%H:%M")
        raise TaskLockedError(f"{task.claimed_by} is working on this task (claimed until {until}); "
                              "pick another task or try again later.")
    if task.claimed_by_id != user.pk or not lease_is_active(task, now):
        task.claimed_at = now
    task.claimed_by = user
    task.lease_expires_at = now + dt.timedelta(seconds=lease_seconds())
    if task.status == TaskStatus.OPEN:
        task.status = TaskStatus.IN_PROGRESS
    task.save(update_fields=["claimed_by", "claimed_at", "lease_expires_at", "status", "updated_at"])


def claim(task_id: int, user: Any) -> AnnotationTask:
    """Claim the task for ``user`` (or renew their lease).

    Raises:
        TaskForbiddenError: the user may not edit it.
        TaskLockedError: another user's lease is still running.
    """
    with transaction.atomic():
        task = AnnotationTask.objects.select_for_update().get(pk=task_id)
        _claim_locked(task, user, timezone.now())
    logger.info("%s claimed by %s until %s", task, user, task.lease_expires_at)
    return task


def release(task_id: int, user: Any) -> None:
    """Give up the user's claim (no effect when someone else holds it); an unfinished task is open again."""
    AnnotationTask.objects.filter(pk=task_id, claimed_by=user, status=TaskStatus.IN_PROGRESS).update(
        status=TaskStatus.OPEN, claimed_by=None, lease_expires_at=None, updated_at=timezone.now())
    AnnotationTask.objects.filter(pk=task_id, claimed_by=user).update(claimed_by=None, lease_expires_at=None)


# ------------------------------------------------------------------------------ uploads


@dataclass(frozen=True)
class MaskUpload:
    """A decoded mask upload: ``data`` holds ``len(slices) * H * W`` bytes (or the whole mask)."""

    shape: tuple[int, int, int]
    data: bytes
    slices: list[int] | None = None
    comment: str = ""
    time_spent_s: float | None = None
    #: the body as sent when it is exactly one gzip member of the whole mask (stored as a draft without re-encoding)
    gzip_body: bytes | None = None


def parse_shape(text: str | None) -> tuple[int, int, int]:
    """``"D,H,W"`` (or ``"H,W"`` → ``(1, H, W)``) → a shape tuple."""
    try:
        dims = [int(p) for p in (text or "").split(",")]
    except ValueError as exc:
        raise MaskUploadError(f"X-Shape must be D,H,W integers, got {text!r}") from exc
    if len(dims) == 2:
        dims = [1, *dims]
    if len(dims) != 3 or min(dims) < 1:
        raise MaskUploadError(f"X-Shape must be three positive integers D,H,W, got {text!r}")
    return dims[0], dims[1], dims[2]


def parse_slices(text: str | None, depth: int) -> list[int] | None:
    """``"3,4,10"`` → ``[3, 4, 10]`` (each in ``0..depth-1``, once); ``None`` when absent."""
    if text is None or text.strip() == "":
        return None
    try:
        slices = [int(p) for p in text.split(",")]
    except ValueError as exc:
        raise MaskUploadError(f"X-Slices must be comma-separated slice numbers, got {text!r}") from exc
    if len(set(slices)) != len(slices) or any(z < 0 or z >= depth for z in slices):
        raise MaskUploadError(f"X-Slices must name distinct slices in 0..{depth - 1}, got {text!r}")
    return slices


def rle_decode(body: bytes, expected: int) -> bytes:
    """Decode ``rle-v1``: pairs ``(value: uint8, run: unsigned LEB128)`` adding up to ``expected`` bytes."""
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        value, i = body[i], i + 1
        run, shift = 0, 0
        while True:
            if i >= n:
                raise MaskUploadError("rle-v1 body ends inside a run length")
            byte, i = body[i], i + 1
            run |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 35:
                raise MaskUploadError("rle-v1 run length is too long")
        if len(out) + run > expected:
            raise MaskUploadError(f"rle-v1 runs exceed the expected {expected} bytes")
        out += bytes([value]) * run
    if len(out) != expected:
        raise MaskUploadError(f"rle-v1 runs add up to {len(out)} bytes, expected {expected}")
    return bytes(out)


def decode_body(body: bytes, encoding: str, expected: int) -> bytes:
    """Inflate an upload body (``gzip``, ``rle-v1`` or ``identity``) to exactly ``expected`` bytes."""
    return decode_upload(body, encoding, expected)[0]


def decode_upload(body: bytes, encoding: str, expected: int) -> tuple[bytes, bytes | None]:
    """:func:`decode_body`, and the body itself when it is one complete, well-compressed gzip member
    (a whole-mask draft is stored as sent instead of compressed again)."""
    kept: bytes | None = None
    if encoding == "gzip":
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = decompressor.decompress(body, expected + 1)  # bounded: no inflate bomb
        except zlib.error as exc:
            raise MaskUploadError(f"the gzip body cannot be inflated: {exc}") from exc
        if not decompressor.eof and len(data) <= expected:
            raise MaskUploadError("the gzip body is truncated: send the whole compressed mask")
        if decompressor.eof and not decompressor.unused_data and len(body) * KEEP_GZIP_MIN_RATIO <= expected:
            kept = body
    elif encoding == "rle-v1":
        data = rle_decode(body, expected)
    elif encoding in ("", "identity"):
        data = body
    else:
        raise MaskUploadError(f"unknown mask encoding {encoding!r}: use gzip or rle-v1")
    if len(data) != expected:
        raise MaskUploadError(f"the mask body holds {len(data)} bytes after decoding, expected {expected}")
    return data, kept


def build_mask(upload: MaskUpload, expected_shape: tuple[int, int, int], base: np.ndarray | None) -> np.ndarray:
    """The full ``(D, H, W)`` mask of an upload: its slices over ``base`` (zeros when ``None``).

    Raises:
        MaskUploadError: wrong shape, or values outside {0, 1, 2}.
    """
    if upload.shape != expected_shape:
        raise MaskUploadError(f"the mask shape {upload.shape} does not match the task's {expected_shape}")
    d, h, w = expected_shape
    values = np.frombuffer(upload.data, dtype=np.uint8)
    if values.size and values.max() > max(labelmaps.LABEL_VALUES):
        raise MaskUploadError(f"mask values must be in {labelmaps.LABEL_VALUES}, found {int(values.max())}")
    if upload.slices is None:
        return values.reshape(d, h, w)  # read-only view of the upload: nothing changes a mask in place
    mask = base.copy() if base is not None else np.zeros(expected_shape, np.uint8)
    mask[upload.slices] = values.reshape(len(upload.slices), h, w)
    return mask


# ------------------------------------------------------------------------------ drafts and actions


@dataclass
class SaveOutcome:
    revision: MaskRevision | None
    saved_at: dt.datetime


def _locked_task(task_id: int, user: Any, parent_id: int | None, now: dt.datetime) -> tuple[AnnotationTask, MaskRevision | None]:
    """Lock the task row, (re)claim it, and check that ``parent_id`` is still the latest revision."""
    task = AnnotationTask.objects.select_for_update(of=("self",)).select_related("series").get(pk=task_id)
    _claim_locked(task, user, now)
    latest = working_revision(task)
    latest_id = latest.pk if latest is not None else None
    if parent_id != latest_id:
        if latest is not None and latest.author_id == user.pk:
            at = timezone.localtime(latest.created_at).strftime("%H:%M:%S")
            raise TaskConflictError(
                f"You saved this task in another tab or window (revision {latest.number} at {at}). "
                "Reload to continue from that version, or keep this tab's edit as a new revision on top of it.",
                latest_id, saved_by_you=True)
        author = (latest.author.get_username() if latest is not None and latest.author_id else "the model")
        raise TaskConflictError(
            f"Someone saved this task in the meantime (revision {latest.number if latest else '–'} by {author}). "
            "Reload their version, or keep your edit as a new revision on top of it.", latest_id)
    return task, latest


def _base_for(latest: MaskRevision | None) -> np.ndarray | None:
    """What an upload of some slices applies to: the parent revision (docs/viewer-api.md)."""
    return revision_volume(latest) if latest is not None else None


def _changed_slices(mask: np.ndarray, parent: np.ndarray | None, candidates: Sequence[int] | None) -> list[int]:
    """Slices of a ``(D, H, W)`` mask that differ from ``parent`` (zeros when ``None``), looking only at
    ``candidates`` when given (an upload of some slices over the parent changes no other slice)."""
    zs = sorted(candidates) if candidates is not None else range(mask.shape[0])
    if parent is None:
        return [int(z) for z in zs if mask[z].any()]
    return [int(z) for z in zs if not np.array_equal(mask[z], parent[z])]


def draft_labels(draft: Draft) -> np.ndarray:
    """A draft's mask ``(D, H, W)`` uint8."""
    return np.frombuffer(gzip.decompress(bytes(draft.data)), np.uint8).reshape(draft.shape).copy()


def get_draft(task: AnnotationTask, user: Any) -> Draft | None:
    """The user's draft of the task, or ``None``."""
    return Draft.objects.filter(task=task, author=user).first()


def save_draft(task_id: int, user: Any, parent_id: int | None, upload: MaskUpload) -> SaveOutcome:
    """Store (replace) the user's draft of the task and renew their lease.

    Raises:
        MaskUploadError, TaskForbiddenError, TaskLockedError, TaskConflictError.
    """
    now = timezone.now()
    with transaction.atomic():
        task, latest = _locked_task(task_id, user, parent_id, now)
        shape = task_shape(task)
        # the parent is needed for an upload of some slices and for the changed slices of a CT draft,
        # not for a whole X-ray mask
        parent = _base_for(latest) if upload.slices is not None or shape[0] > 1 else None
        mask = build_mask(upload, shape, parent)
        changed = _changed_slices(mask, parent, upload.slices) if mask.shape[0] > 1 else None
        data = upload.gzip_body if upload.slices is None and upload.gzip_body is not None else \
            gzip.compress(mask.tobytes(), compresslevel=1)
        fields = {"parent_revision": latest, "data": data, "shape": list(mask.shape), "slices": changed, "saved_at": now}
        # one UPDATE (the old mask is not read back); the task's row lock keeps a first save from racing another
        saved_at = now
        if not Draft.objects.filter(task=task, author=user).update(**fields):
            saved_at = Draft.objects.create(task=task, author=user, **fields).saved_at  # auto_now sets its own time
    logger.info("saved draft of %s by %s (%s)", task, user, "whole mask" if upload.slices is None else upload.slices)
    return SaveOutcome(None, saved_at)


def _time_spent(task: AnnotationTask, claimed_at: dt.datetime | None, reported: float | None, now: dt.datetime) -> float:
    if reported is not None:
        return float(min(max(reported, 0.0), MAX_TIME_SPENT_S))
    if claimed_at is not None:
        return float(min((now - claimed_at).total_seconds(), MAX_TIME_SPENT_S))
    return 0.0


def _close(task: AnnotationTask, user: Any, kind: str, revision: MaskRevision, spent: float,
           reason: str = "", reason_text: str = "") -> None:
    TaskAction.objects.create(task=task, revision=revision, kind=kind, author=user, reason=reason,
                              reason_text=reason_text, time_spent_s=spent)
    task.status = TaskStatus.IN_REVIEW
    task.time_spent_s += spent
    task.claimed_by, task.lease_expires_at, task.claimed_at = None, None, None
    task.save(update_fields=["status", "time_spent_s", "claimed_by", "lease_expires_at", "claimed_at", "updated_at"])
    Draft.objects.filter(task=task, author=user).delete()
    logger.info("%s: %s by %s → revision %s (%.0f s)", task, kind, user, revision.pk, spent)
    from .review.routing import route_closed  # the review side decides where the closed task goes

    route_closed(task, revision, kind)


def keep_other_drafts(task: AnnotationTask, user: Any) -> list[KeptDraft]:
    """Keep the other users' drafts of the task as non-current revisions before ``user`` saves over it.

    Each becomes a revision with status ``draft`` (child of the revision it was drawn on) and a
    :class:`KeptDraft` notice its author sees on their next visit; the draft row is removed.
    Call with the task row locked, before the new revision is stored (so that it stays the latest).
    """
    kept = []
    for draft in Draft.objects.filter(task=task).exclude(author=user).select_related("author", "parent_revision"):
        mask = draft_labels(draft)
        parent = draft.parent_revision
        revision = services.create_revision(
            series=task.series, instance=task.instance, labels=mask[0] if task.instance_id is not None else mask,
            source=RevisionSource.PERSON, status=RevisionStatus.DRAFT,
            spacing=tuple(parent.spacing) if parent is not None and parent.spacing else None,
            geometry=_inherited_geometry(parent, mask), parent=parent, author=draft.author, method="draft",
            note=f"unsubmitted draft kept when {user.get_username()} saved over the task")
        kept.append(KeptDraft.objects.create(task=task, author=draft.author, revision=revision, saved_over_by=user))
        draft.delete()
        logger.info("kept the draft of %s on %s as %s", draft.author, task, revision)
    return kept


def untold_kept_drafts(user: Any, task: AnnotationTask | None = None, mark_told: bool = True) -> list[KeptDraft]:
    """The user's drafts kept since their last visit (of one task, or all), marked as told."""
    notices = KeptDraft.objects.filter(author=user, told_at__isnull=True).select_related("revision", "saved_over_by")
    if task is not None:
        notices = notices.filter(task=task)
    notices = list(notices)
    if mark_told and notices:
        KeptDraft.objects.filter(pk__in=[n.pk for n in notices]).update(told_at=timezone.now())
    return notices


def store_person_revision(task: AnnotationTask, user: Any, latest: MaskRevision | None, mask: np.ndarray,
                          status: str, method: str, note: str = "") -> MaskRevision:
    """Store ``mask`` (``(D, H, W)``) as a person's revision of the task, child of ``latest``; other users'
    drafts of the task are kept first (:func:`keep_other_drafts`)."""
    keep_other_drafts(task, user)
    labels = mask[0] if task.instance_id is not None else mask
    return services.create_revision(
        series=task.series, instance=task.instance, labels=labels, source=RevisionSource.PERSON, status=status,
        spacing=tuple(latest.spacing) if latest is not None and latest.spacing else None,
        geometry=_inherited_geometry(latest, labels), parent=latest, author=user, method=method, note=note,
    )


def _inherited_geometry(latest: MaskRevision | None, labels: np.ndarray) -> dict[str, Any] | None:
    """The parent's geometry for a person's revision, without the instance placement when the series
    has gained instances since (then that placement and the reader's warnings describe another series)."""
    if latest is None:
        return None
    geometry = dict(latest.geometry or {})
    placed = geometry.get("source_slices")
    if placed is not None and len(placed) != labels.shape[0]:
        for key in ("source_slices", "grid_depth", "warnings", "instance_ids"):
            geometry.pop(key, None)
    return geometry


def submit(task_id: int, user: Any, parent_id: int | None, upload: MaskUpload) -> SaveOutcome:
    """Store the user's edited mask as a new revision (parent: ``parent_id``) and send the task to review."""
    now = timezone.now()
    with transaction.atomic():
        task, latest = _locked_task(task_id, user, parent_id, now)
        mask = build_mask(upload, task_shape(task), _base_for(latest))
        spent = _time_spent(task, task.claimed_at, upload.time_spent_s, now)
        revision = store_person_revision(task, user, latest, mask, RevisionStatus.SUBMITTED, "manual", upload.comment)
        _close(task, user, TaskActionKind.SUBMIT, revision, spent)
    return SaveOutcome(revision, revision.created_at)


def accept(task_id: int, user: Any, parent_id: int | None, time_spent_s: float | None = None) -> SaveOutcome:
    """Accept the latest revision as it is: a new revision with the same mask, sent to review."""
    now = timezone.now()
    with transaction.atomic():
        task, latest = _locked_task(task_id, user, parent_id, now)
        if latest is None:
            raise MaskUploadError("This task has no mask to accept yet; draw one and submit it instead.")
        spent = _time_spent(task, task.claimed_at, time_spent_s, now)
        revision = store_person_revision(task, user, latest, revision_volume(latest), RevisionStatus.ACCEPTED,
                                         "accepted")
        _close(task, user, TaskActionKind.ACCEPT, revision, spent)
    return SaveOutcome(revision, revision.created_at)


def reject(task_id: int, user: Any, parent_id: int | None, reason: str, text: str = "",
           time_spent_s: float | None = None) -> SaveOutcome:
    """Reject the image with a reason (``other`` needs ``text``): a rejected revision, sent to review."""
    if reason not in RejectReason.values:
        raise MaskUploadError(f"reason must be one of {', '.join(RejectReason.values)}, got {reason!r}")
    text = text.strip()
    if reason == RejectReason.OTHER and not text:
        raise MaskUploadError("Say why the task is rejected when the reason is 'other'.")
    now = timezone.now()
    with transaction.atomic():
        task, latest = _locked_task(task_id, user, parent_id, now)
        mask = revision_volume(latest) if latest is not None else np.zeros(task_shape(task), np.uint8)
        spent = _time_spent(task, task.claimed_at, time_spent_s, now)
        note = f"rejected: {RejectReason(reason).label}" + (f": {text}" if text else "")
        revision = store_person_revision(task, user, latest, mask, RevisionStatus.REJECTED, "rejected", note)
        _close(task, user, TaskActionKind.REJECT, revision, spent, reason, text)
    return SaveOutcome(revision, revision.created_at)


# ------------------------------------------------------------------------------ queue


@dataclass
class QueueItem:
    """One row of "my queue"."""

    task: AnnotationTask
    modality: str
    flags: list[str] = field(default_factory=list)
    confidence: float | None = None
    mine: bool = False
    #: Status as it is now (in progress only under a live lease).
    status: str = TaskStatus.OPEN
    #: Users with an unsubmitted draft of the task.
    drafts_by: list[str] = field(default_factory=list)

    @property
    def status_label(self) -> str:
        return TaskStatus(self.status).label


def queue_for(user: Any, limit: int = 200) -> list[QueueItem]:
    """Editable tasks of the user's projects, assigned to them or unassigned, not leased by someone else.

    Ordered by the lead's priority (highest first), then QC flags of the latest model proposal (most
    flags first), then model confidence (least confident first; unknown last), then age.
    """
    from quality.models import QCFlag  # quality is downstream; read-only use for ordering and display

    now = timezone.now()
    model_rev = (MaskRevision.objects.filter(target_key=OuterRef("target_key"), source=RevisionSource.MODEL)
                 .exclude(status__in=MaskRevision.SIDE_STATUSES).order_by("-number"))
    tasks = (
        AnnotationTask.objects
        .filter(project_id__in=project_ids_for(user, ANNOTATE_ROLES),
                status__in=[TaskStatus.OPEN, TaskStatus.IN_PROGRESS, TaskStatus.RETURNED])
        .filter(Q(assignee__isnull=True) | Q(assignee=user))
        .exclude(Q(lease_expires_at__gt=now) & ~Q(claimed_by=user) & Q(claimed_by__isnull=False))
        .exclude(double_read__status="awaiting_second", double_read__first_revision__author=user)
        .annotate(model_revision_id=Subquery(model_rev.values("pk")[:1]),
                  flagged=Subquery(model_rev.values("qc__flagged_count")[:1]),
                  confidence=Subquery(model_rev.values("confidence")[:1]))
        .select_related("series__study__patient", "project")  # the queue page names each task's study
        .order_by("-priority", F("flagged").desc(nulls_last=True), F("confidence").asc(nulls_last=True), "created_at",
                  "id")[:limit]
    )
    tasks = list(tasks)
    flags: dict[int, list[str]] = {}
    for revision_id, name in QCFlag.objects.filter(
            revision_id__in=[t.model_revision_id for t in tasks], flagged=True).values_list("revision_id", "name"):
        flags.setdefault(revision_id, []).append(name)
    drafts: dict[int, list[str]] = {}
    for task_id, username in Draft.objects.filter(task_id__in=[t.pk for t in tasks]).values_list(
            "task_id", "author__username").order_by("author__username"):
        drafts.setdefault(task_id, []).append(username)
    return [QueueItem(task=t, modality=t.series.modality, flags=flags.get(t.model_revision_id, []),
                      confidence=t.confidence, mine=t.claimed_by_id == user.pk and lease_is_active(t, now),
                      status=live_status(t, now), drafts_by=drafts.get(t.pk, []))
            for t in tasks]



def reject_reasons() -> Sequence[tuple[str, str]]:
    """``(code, label)`` of the reasons a task may be rejected with."""
    return RejectReason.choices
