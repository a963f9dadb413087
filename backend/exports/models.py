"""Export jobs and the data terms (licence, source) that every archive of a project carries."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ExportFormat(models.TextChoices):
    NIFTI = "nifti", "NIfTI images + label volumes"
    PNG = "png", "PNG images + label PNGs (X-ray)"
    SEG = "seg", "DICOM SEG + de-identified source DICOM"
    NNUNET = "nnunet", "nnU-Net v2 raw dataset"
    COCO = "coco", "COCO with RLE masks (X-ray)"
    MONAI = "monai", "MONAI datalist JSON + images and labels"


class ExportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ProjectDataTerms(models.Model):
    """The licence and source statement written into every export of a project."""

    project = models.OneToOneField("imaging.Project", on_delete=models.CASCADE, related_name="data_terms")
    licence = models.TextField(blank=True, help_text="Licence of the images and labels (e.g. CC BY 4.0 with terms)")
    source = models.TextField(blank=True, help_text="Where the data come from and how to cite them")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "project data terms"
        verbose_name_plural = "project data terms"

    def __str__(self) -> str:
        return f"data terms of project {self.project_id}"


class ExportJob(models.Model):
    """One export of a selection in one format: a Celery job that stores a zip archive.

    ``selection`` is the validated selection (``{"kind": "filter", ...}``); ``archive`` names the
    stored zip once the job succeeded (never a partial file); ``dataset_hash`` is the SHA-256 of
    the canonical provenance of the selected cases (same selection and data → same hash).
    """

    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="export_jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="export_jobs")
    origin = models.CharField(max_length=10, choices=[("api", "API or page"), ("command", "export_dataset command")],
                              default="api", help_text="Jobs from the API re-check the requester's role when they run")
    format = models.CharField(max_length=10, choices=ExportFormat.choices)
    selection = models.JSONField(help_text="The selection as validated (kind + parameters)")
    status = models.CharField(max_length=10, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    progress_done = models.PositiveIntegerField(default=0, help_text="Cases written so far")
    progress_total = models.PositiveIntegerField(default=0, help_text="Cases selected")
    error = models.TextField(blank=True)
    archive = models.FileField(max_length=255, blank=True)
    archive_size = models.PositiveBigIntegerField(null=True, blank=True)
    archive_sha256 = models.CharField(max_length=64, blank=True)
    dataset_hash = models.CharField(max_length=64, blank=True)
    case_count = models.PositiveIntegerField(default=0)
    celery_task_id = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "status"])]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format}, {self.status})"
