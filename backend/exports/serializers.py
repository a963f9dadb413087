"""Serializers of exports: export jobs (read), export requests and label imports (write)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .models import ExportJob


class ExportJobSerializer(serializers.ModelSerializer):
    """An export job with its progress and, once succeeded, its download URL."""

    download_url = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ExportJob
        fields = ["id", "project", "format", "selection", "status", "progress", "progress_done", "progress_total",
                  "error", "case_count", "dataset_hash", "archive_size", "archive_sha256", "download_url",
                  "requested_by", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_download_url(self, job: ExportJob) -> str | None:
        return f"/api/exports/{job.pk}/download/" if job.archive else None

    def get_progress(self, job: ExportJob) -> float:
        """Fraction of cases written, in [0, 1]."""
        if job.status == "succeeded":
            return 1.0
        return round(job.progress_done / job.progress_total, 3) if job.progress_total else 0.0


class ExportRequestSerializer(serializers.Serializer):
    """``{"format": "nifti|png|seg|nnunet|coco|monai", "selection": {"kind": "filter", "project_id": 1, ...}}``.

    Values are checked by the service (its messages name the valid choices).
    """

    format = serializers.CharField(max_length=20)
    selection = serializers.JSONField()
    nnunet_id = serializers.IntegerField(required=False, min_value=1, max_value=999,
                                         help_text="nnU-Net dataset id (Dataset<ID>_<name>), default 501")

    def options(self) -> dict[str, Any]:
        return {"nnunet_id": self.validated_data["nnunet_id"]} if "nnunet_id" in self.validated_data else {}


class LabelImportSerializer(serializers.Serializer):
    """A DICOM SEG, RTSTRUCT or NIfTI label volume to import into a project."""

    project = serializers.IntegerField()
    file = serializers.FileField()
    series = serializers.IntegerField(required=False, help_text="Target series (required for NIfTI label volumes)")
    mapping = serializers.JSONField(required=False, help_text='Segment/ROI name → label, e.g. {"RT LUNG": 1}')
