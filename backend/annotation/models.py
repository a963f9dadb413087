"""Mask lineage: append-only :class:`MaskRevision` rows per target (X-ray image or CT series).

A revision is never overwritten or deleted by normal operations: :meth:`MaskRevision.save`
refuses to change a stored revision (only its review ``status`` may move on) and
:meth:`MaskRevision.delete` and queryset deletes refuse outright. Deleting the imaging data
itself (a project admin's action) still cascades through the database.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class RevisionImmutableError(Exception):
    """An attempt to change or delete a stored mask revision."""


class RevisionSource(models.TextChoices):
    MODEL = "model", "Model proposal"
    PERSON = "person", "Person"
    IMPORT = "import", "Imported (DICOM SEG, RTSTRUCT or NIfTI)"


class RevisionStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed (awaiting correction)"
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted for review (edited)"
    ACCEPTED = "accepted", "Accepted unchanged, awaiting review"
    APPROVED = "approved", "Approved (curated)"
    RETURNED = "returned", "Returned to the annotator"
    REJECTED = "rejected", "Rejected"
    SIDE = "side", "Side proposal (comparison only)"


#: Revision statuses a person's closed task leaves for review.
REVIEWABLE_STATUSES: frozenset[str] = frozenset({RevisionStatus.SUBMITTED, RevisionStatus.ACCEPTED,
                                                 RevisionStatus.REJECTED})


class RevisionQuerySet(models.QuerySet):
    def delete(self) -> Any:  # type: ignore[override]
        raise RevisionImmutableError("mask revisions are append-only and cannot be deleted")


class MaskRevision(models.Model):
    """One version of the lung label map of a target.

    ``target_key`` is ``"instance:<id>"`` (X-ray image) or ``"series:<id>"`` (CT series);
    ``number`` counts 1, 2, ... per target; ``parent`` is the revision this one corrects.
    The label map is stored through the storage API (``labelmap``: PNG for 2D, ``.nii.gz`` for
    3D) and ``checksum`` is the SHA-256 of its shape and raw uint8 bytes.
    """

    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="mask_revisions")
    series = models.ForeignKey("imaging.Series", on_delete=models.CASCADE, related_name="mask_revisions")
    instance = models.ForeignKey(
        "imaging.Instance", null=True, blank=True, on_delete=models.CASCADE, related_name="mask_revisions"
    )
    target_key = models.CharField(max_length=40)
    number = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    source = models.CharField(max_length=10, choices=RevisionSource.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="mask_revisions"
    )
    model_version = models.ForeignKey(
        "modeling.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="mask_revisions"
    )
    proposal_job = models.OneToOneField(
        "modeling.ProposalJob", null=True, blank=True, on_delete=models.PROTECT, related_name="revision",
        help_text="The job that proposed it; one revision per job makes proposals idempotent",
    )
    method = models.CharField(max_length=20, blank=True, help_text="'model', 'classical' (fallback) or 'manual'")
    note = models.TextField(blank=True, help_text="E.g. why the classical fallback ran")
    status = models.CharField(max_length=10, choices=RevisionStatus.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    labelmap = models.FileField(max_length=255)
    labelmap_format = models.CharField(max_length=10, help_text="'png' or 'nii.gz'")
    shape = models.JSONField(help_text="Array shape: [H, W] or [D, H, W]")
    dtype = models.CharField(max_length=10, default="uint8")
    spacing = models.JSONField(null=True, blank=True, help_text="mm per array axis; null when unknown")
    geometry = models.JSONField(default=dict, blank=True, help_text="Origin/direction (CT, LPS) or image size")
    checksum = models.CharField(max_length=64)
    right_size = models.FloatField(help_text="Right lung area (mm²) or volume (mL), see size_unit")
    left_size = models.FloatField(help_text="Left lung area (mm²) or volume (mL), see size_unit")
    size_unit = models.CharField(max_length=4, help_text="'mm2', 'mL' or 'px' (no pixel spacing)")
    confidence = models.FloatField(null=True, blank=True, help_text="Model confidence in [0, 1]")
    entropy = models.FloatField(null=True, blank=True, help_text="Mean normalised predictive entropy in [0, 1]")

    objects = RevisionQuerySet.as_manager()

    #: Statuses that never become a task's current revision (model output stored for comparison).
    SIDE_STATUSES = frozenset({RevisionStatus.SIDE})

    #: Fields a stored revision may still change (review moves the status on).
    MUTABLE_FIELDS = frozenset({"status"})

    class Meta:
        ordering = ["target_key", "number"]
        constraints = [models.UniqueConstraint(fields=["target_key", "number"], name="unique_revision_number")]
        indexes = [models.Index(fields=["series", "number"])]

    def __str__(self) -> str:
        return f"revision {self.number} of {self.target_key} ({self.source})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            fields = kwargs.get("update_fields")
            if fields is None or not set(fields) <= self.MUTABLE_FIELDS:
                raise RevisionImmutableError(
                    f"revision {self.pk} is stored; only {sorted(self.MUTABLE_FIELDS)} may change (got {fields})")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise RevisionImmutableError(f"revision {self.pk} is append-only and cannot be deleted")


# Tasks, drafts and task actions live in their own module (issue 6); imported here so Django registers them.
from .task_models import (  # noqa: E402,F401
    AnnotationTask, Draft, KeptDraft, RejectReason, TaskAction, TaskActionKind, TaskStatus)
# The review stage's models live in annotation.review (issue 20).
from .review.models import (  # noqa: E402,F401
    DecisionKind, DoubleRead, DoubleReadStatus, EditMeasure, ReviewDecision, ReviewPolicy)
