"""Django admin for the imaging models."""

from __future__ import annotations

from django.contrib import admin

from accounts.admin import AuditedAdminMixin

from .models import Instance, Patient, Project, Series, Study, Upload


@admin.register(Project)
class ProjectAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Projects; every change (de-identification switched off, label schema, ...) is audited."""

    audit_project_field = "pk"
    list_display = ["name", "deidentify", "created_at"]
    search_fields = ["name"]


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["pseudonym", "project", "created_at"]
    list_filter = ["project"]
    search_fields = ["pseudonym"]


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["study_instance_uid", "project", "patient", "study_date"]
    list_filter = ["project"]
    search_fields = ["study_instance_uid"]
    raw_id_fields = ["patient"]


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ["series_instance_uid", "project", "modality", "rows", "columns", "num_instances", "burned_in_annotation"]
    list_filter = ["project", "modality", "source_format", "burned_in_annotation"]
    search_fields = ["series_instance_uid"]
    raw_id_fields = ["study"]


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["sop_instance_uid", "project", "series", "instance_number", "slice_location"]
    list_filter = ["project"]
    search_fields = ["sop_instance_uid"]
    raw_id_fields = ["series"]


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "created_by", "source", "num_files", "num_instances", "created_at"]
    list_filter = ["project", "source"]
    raw_id_fields = ["series"]
