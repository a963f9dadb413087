"""What a project lead sets beside the imaging project itself: the modality the project expects."""

from __future__ import annotations

from django.db import models


class ProjectModality(models.TextChoices):
    CXR = "cxr", "Chest X-ray"
    CT = "ct", "Chest CT"
    MIXED = "mixed", "X-ray and CT"


class ProjectProfile(models.Model):
    """Per-project settings held by administration (one row per project, created on first use)."""

    project = models.OneToOneField("imaging.Project", on_delete=models.CASCADE, related_name="profile")
    modality = models.CharField(max_length=8, choices=ProjectModality.choices, default=ProjectModality.MIXED)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"profile of project {self.project_id} ({self.modality})"
