"""Imaging data model: Project → Patient → Study → Series → Instance, plus Upload records.

UIDs are unique within a project. With de-identification on (the default) every UID, date and
the patient pseudonym stored here are the de-identified values; originals are never stored.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def default_label_schema() -> list[dict[str, object]]:
    """Label values of the lung masks: 0 background, 1 patient's right lung, 2 patient's left lung."""
    return [
        {"value": 0, "name": "background"},
        {"value": 1, "name": "right lung"},
        {"value": 2, "name": "left lung"},
    ]


def new_project_secret() -> str:
    """Per-project secret keying pseudonyms, UID remapping and date offsets (256 bits, hex)."""
    return secrets.token_hex(32)


class Modality(models.TextChoices):
    CR = "CR", "Computed radiography"
    DX = "DX", "Digital radiography"
    CT = "CT", "Computed tomography"


#: Modalities a PNG/JPEG chest X-ray may be recorded as.
XRAY_MODALITIES = [(Modality.DX.value, Modality.DX.label), (Modality.CR.value, Modality.CR.label)]


class SourceFormat(models.TextChoices):
    DICOM = "dicom", "DICOM"
    IMAGE = "image", "PNG/JPEG wrapped as DICOM Secondary Capture"
    NIFTI = "nifti", "NIfTI converted to a DICOM CT series"


class BurnedInAnnotation(models.TextChoices):
    YES = "YES", "Yes"
    NO = "NO", "No"
    UNKNOWN = "UNKNOWN", "Unknown"


class Project(models.Model):
    """A dataset with its label schema and de-identification setting."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    label_schema = models.JSONField(default=default_label_schema)
    deidentify = models.BooleanField(
        default=True, help_text="De-identify on ingest (PS3.15 basic profile). Off keeps identifiers."
    )
    deid_secret = models.CharField(max_length=64, default=new_project_secret, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Patient(models.Model):
    """A patient known only by a stable per-project pseudonym."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="patients")
    pseudonym = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "pseudonym"]
        constraints = [models.UniqueConstraint(fields=["project", "pseudonym"], name="unique_patient_pseudonym")]

    def __str__(self) -> str:
        return self.pseudonym


class Study(models.Model):
    """A DICOM study (de-identified UID and shifted date)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="studies")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="studies")
    study_instance_uid = models.CharField(max_length=64)
    study_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "id"]
        verbose_name_plural = "studies"
        constraints = [models.UniqueConstraint(fields=["project", "study_instance_uid"], name="unique_study_uid")]

    def __str__(self) -> str:
        return self.study_instance_uid


class Series(models.Model):
    """A series with its geometry: pixel spacing (row, column) and slice spacing in mm."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="series")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=2, choices=Modality.choices)
    source_format = models.CharField(max_length=10, choices=SourceFormat.choices, default=SourceFormat.DICOM)
    series_number = models.IntegerField(null=True, blank=True)
    rows = models.PositiveIntegerField()
    columns = models.PositiveIntegerField()
    pixel_spacing_row = models.FloatField(null=True, blank=True, help_text="mm between rows")
    pixel_spacing_column = models.FloatField(null=True, blank=True, help_text="mm between columns")
    slice_spacing = models.FloatField(null=True, blank=True, help_text="mm between slice centres (CT)")
    slice_thickness = models.FloatField(null=True, blank=True, help_text="mm")
    orientation = models.JSONField(null=True, blank=True, help_text="ImageOrientationPatient (6 direction cosines)")
    frame_of_reference_uid = models.CharField(max_length=64, blank=True)
    burned_in_annotation = models.CharField(
        max_length=7, choices=BurnedInAnnotation.choices, default=BurnedInAnnotation.UNKNOWN
    )
    num_instances = models.PositiveIntegerField(default=0)
    stats = models.JSONField(null=True, blank=True, help_text="Intensity statistics computed after ingest")
    stats_computed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "id"]
        verbose_name_plural = "series"
        constraints = [models.UniqueConstraint(fields=["project", "series_instance_uid"], name="unique_series_uid")]

    def __str__(self) -> str:
        return f"{self.modality} {self.series_instance_uid}"


class Instance(models.Model):
    """One stored DICOM object (de-identified) and its place in the series."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="instances")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True, blank=True)
    image_position = models.JSONField(null=True, blank=True, help_text="ImagePositionPatient (mm)")
    slice_location = models.FloatField(null=True, blank=True, help_text="Position along the slice normal (mm)")
    file = models.FileField(max_length=255)
    file_size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["series_id", "slice_location", "instance_number", "id"]
        constraints = [models.UniqueConstraint(fields=["project", "sop_instance_uid"], name="unique_sop_uid")]

    def __str__(self) -> str:
        return self.sop_instance_uid


class Upload(models.Model):
    """A successful ingest (failed ones leave nothing behind). Holds counts, never file names."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="uploads")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="uploads"
    )
    source = models.CharField(max_length=10, choices=[("api", "API"), ("command", "import_studies")], default="api")
    num_files = models.PositiveIntegerField(default=0)
    num_instances = models.PositiveIntegerField(default=0)
    num_duplicates = models.PositiveIntegerField(default=0)
    series = models.ManyToManyField(Series, related_name="uploads", blank=True)
    warnings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"upload {self.pk} into {self.project_id}"
