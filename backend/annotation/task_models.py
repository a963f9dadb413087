"""Annotation tasks (one per X-ray image or CT series), per-user drafts and the actions that close a task.

Imported by :mod:`annotation.models` so that Django registers the models in the ``annotation`` app.

- :class:`AnnotationTask`: the unit of work of the annotators' queue. It is *claimed* with a lease
  (``claimed_by`` until ``lease_expires_at``) so that two people do not edit the same mask; an
  expired lease frees it again.
- :class:`Draft`: one autosaved, not yet submitted mask per task and user (gzip of the raw
  ``(D, H, W)`` uint8 bytes) with the revision it was made from.
- :class:`TaskAction`: who accepted, submitted or rejected which revision, why and how long it took.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TaskStatus(models.TextChoices):
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    IN_REVIEW = "in_review", "In review"
    RETURNED = "returned", "Returned for changes"
    DONE = "done", "Done"
    REJECTED = "rejected", "Rejected"


class TaskActionKind(models.TextChoices):
    ACCEPT = "accept", "Accepted the mask as it was"
    SUBMIT = "submit", "Submitted edits"
    REJECT = "reject", "Rejected the image"


class RejectReason(models.TextChoices):
    UNREADABLE = "unreadable", "Unreadable image"
    NOT_CHEST = "not_chest", "Not a chest image"
    WRONG_MODALITY = "wrong_modality", "Wrong modality"
    OTHER = "other", "Other"


class AnnotationTask(models.Model):
    """Correcting the lung mask of one target (``target_key`` as in :class:`MaskRevision`)."""

    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="annotation_tasks")
    series = models.ForeignKey("imaging.Series", on_delete=models.CASCADE, related_name="annotation_tasks")
    instance = models.ForeignKey(
        "imaging.Instance", null=True, blank=True, on_delete=models.CASCADE, related_name="annotation_tasks")
    target_key = models.CharField(max_length=40, unique=True)
    status = models.CharField(max_length=12, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_tasks",
        help_text="Set by the project lead; unassigned tasks are open to every annotator of the project")
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="claimed_tasks")
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    time_spent_s = models.FloatField(default=0.0, help_text="Seconds spent by annotators, summed over actions")
    priority = models.IntegerField(default=0, help_text="Set by the project lead; higher comes first in the queue")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "status"])]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.target_key}, {self.status})"


class Draft(models.Model):
    """A user's autosaved mask for a task: gzip of the raw C-order uint8 ``shape`` bytes."""

    task = models.ForeignKey(AnnotationTask, on_delete=models.CASCADE, related_name="drafts")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mask_drafts")
    parent_revision = models.ForeignKey(
        "annotation.MaskRevision", null=True, blank=True, on_delete=models.CASCADE, related_name="drafts")
    data = models.BinaryField(help_text="gzip of the raw uint8 (D, H, W) label map")
    shape = models.JSONField(help_text="[D, H, W]")
    slices = models.JSONField(null=True, blank=True, help_text="Slices that differ from the parent (3D); null for 2D")
    saved_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "author"], name="one_draft_per_task_and_user")]

    def __str__(self) -> str:
        return f"draft of task {self.task_id} by user {self.author_id}"


class TaskAction(models.Model):
    """An accept, submit or reject: the revision it created, its author, reason and time spent."""

    task = models.ForeignKey(AnnotationTask, on_delete=models.CASCADE, related_name="actions")
    revision = models.OneToOneField("annotation.MaskRevision", on_delete=models.CASCADE, related_name="task_action")
    kind = models.CharField(max_length=10, choices=TaskActionKind.choices)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="task_actions")
    reason = models.CharField(max_length=20, choices=RejectReason.choices, blank=True)
    reason_text = models.TextField(blank=True)
    time_spent_s = models.FloatField(help_text="Seconds the author worked on the task before this action")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task_id", "id"]

    def __str__(self) -> str:
        return f"{self.kind} of task {self.task_id} by user {self.author_id}"


class KeptDraft(models.Model):
    """Someone's unsubmitted draft, kept as a non-current revision because another person saved over the task.

    Its author is told on their next visit (``told_at`` set then).
    """

    task = models.ForeignKey(AnnotationTask, on_delete=models.CASCADE, related_name="kept_drafts")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="kept_drafts")
    revision = models.OneToOneField("annotation.MaskRevision", on_delete=models.CASCADE, related_name="kept_draft")
    saved_over_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    told_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"draft of user {self.author_id} on task {self.task_id} kept as revision {self.revision_id}"
