"""Users and their membership of projects with a role."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """Pleura user (Django's user, kept swappable for later fields)."""


class Role(models.TextChoices):
    """What a member may do in a project."""

    ANNOTATOR = "annotator", "Annotator"
    REVIEWER = "reviewer", "Reviewer (project lead)"
    ML_ENGINEER = "ml_engineer", "ML engineer"
    ADMIN = "admin", "Project admin"


class Membership(models.Model):
    """A user's role in one project (one role per user and project)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="unique_membership")]
        ordering = ["project_id", "user_id"]

    def __str__(self) -> str:
        return f"{self.user} in project {self.project_id} as {self.role}"


class AuditEntry(models.Model):
    """One administrative action: who did what to which object, with the state before and after.

    Append-only: rows are never updated or deleted by the platform (the admin shows them
    read-only). ``target_repr`` and ``project_id`` are plain copies, not foreign keys, so the
    record outlives the object it describes (a deleted series keeps its deletion record).
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    #: The actor's username at the time (kept when the user is deleted).
    actor_name = models.CharField(max_length=150, blank=True)
    #: Dotted verb, e.g. ``membership.create``, ``project.update``, ``series.delete``.
    action = models.CharField(max_length=64, db_index=True)
    #: ``app_label.model`` of the object acted on.
    target_type = models.CharField(max_length=100)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=300, blank=True)
    #: Project the object belongs to (plain id: the record survives the project's deletion).
    project_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name or '-'} {self.action} {self.target_type}#{self.target_id}"
