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
