"""REST serializers for the imaging API."""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.permissions import role_in

from .models import XRAY_MODALITIES, Instance, Modality, Patient, Project, Series, Study, Upload


class ProjectSerializer(serializers.ModelSerializer):
    my_role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "description", "label_schema", "deidentify", "created_at", "my_role"]
        read_only_fields = ["id", "created_at", "my_role"]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_my_role(self, obj: Project) -> str | None:
        request = self.context.get("request")
        return role_in(request.user, obj.pk) if request else None


class PatientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["id", "project", "pseudonym", "created_at"]


class StudySerializer(serializers.ModelSerializer):
    class Meta:
        model = Study
        fields = ["id", "project", "patient", "study_instance_uid", "study_date", "created_at"]


class SeriesSerializer(serializers.ModelSerializer):
    study_instance_uid = serializers.CharField(source="study.study_instance_uid", read_only=True)
    patient = serializers.IntegerField(source="study.patient_id", read_only=True)

    class Meta:
        model = Series
        fields = [
            "id", "project", "study", "study_instance_uid", "patient", "series_instance_uid", "modality",
            "source_format", "series_number", "rows", "columns", "pixel_spacing_row", "pixel_spacing_column",
            "slice_spacing", "slice_thickness", "orientation", "frame_of_reference_uid", "burned_in_annotation",
            "num_instances", "stats", "stats_computed_at", "created_at",
        ]


class InstanceSerializer(serializers.ModelSerializer):
    wado_url = serializers.SerializerMethodField()

    class Meta:
        model = Instance
        fields = [
            "id", "project", "series", "sop_instance_uid", "sop_class_uid", "instance_number", "image_position",
            "slice_location", "file_size", "sha256", "wado_url", "created_at",
        ]

    def get_wado_url(self, obj: Instance) -> str:
        """Relative WADO-URI URL (prefix with ``wadouri:`` in Cornerstone)."""
        query = urlencode({
            "requestType": "WADO",
            "studyUID": obj.series.study.study_instance_uid,
            "seriesUID": obj.series.series_instance_uid,
            "objectUID": obj.sop_instance_uid,
            "contentType": "application/dicom",
        })
        return f"{reverse('wado')}?{query}"


class UploadSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = Upload
        fields = [
            "id", "project", "created_by", "source", "num_files", "num_instances", "num_duplicates", "series",
            "warnings", "created_at",
        ]
        read_only_fields = fields


class UploadCreateSerializer(serializers.Serializer):
    """Multipart upload: ``project`` id, one or more ``files``; options for PNG/JPEG/NIfTI."""

    project = serializers.PrimaryKeyRelatedField(
        queryset=Project.objects.none(),
        # the same words whether the project does not exist or is not the caller's: no existence leak
        error_messages={"does_not_exist": "invalid project {pk_value}: no such project among yours"},
    )
    files = serializers.ListField(child=serializers.FileField(allow_empty_file=True), required=False)
    patient = serializers.CharField(
        required=False, max_length=128,
        help_text="Patient key for PNG/JPEG/NIfTI files (hashed to a pseudonym; never stored as given)",
    )
    modality = serializers.ChoiceField(
        choices=XRAY_MODALITIES, default=Modality.DX, help_text="Modality recorded for PNG/JPEG X-rays"
    )
