"""Django admin for the imaging models."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.admin import AuditedAdminMixin

from . import services
from .models import Instance, Patient, Project, Series, Study, Upload

ADMIN_REASON = "deleted in the Django admin"


def admin_reason(request: HttpRequest) -> str:
    """The reason typed on the delete confirmation page, or :data:`ADMIN_REASON` (bulk deletes have none)."""
    return (request.POST.get("reason") or "").strip()[:2000] or ADMIN_REASON


class CompleteDeletionMixin:
    """Admin deletion through :mod:`imaging.services`: related rows of every app, files after commit, audit.

    Django's own delete would stop at the ``PROTECT`` links of mask revisions and leave the stored
    files behind; the confirmation page lists what the service removes instead. The permission to
    delete the object itself is what counts: its dependent rows (instances, revisions...) go with it.
    The confirmation page asks for the reason kept in the audit log.
    """

    delete_confirmation_template = "admin/imaging/delete_confirmation.html"

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[str], list[Any]]:
        deleted, counts, _perms, _protected = super().get_deleted_objects(objs, request)  # type: ignore[misc]
        return deleted, counts, set(), []  # revisions are removed by the service, lineage first

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.delete_one(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for obj in queryset.order_by("pk"):
                self.delete_one(request, obj)

    def delete_one(self, request: HttpRequest, obj: Any) -> None:
        raise NotImplementedError


@admin.register(Project)
class ProjectAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Projects; every change (de-identification switched off, label schema, ...) is audited."""

    audit_project_field = "pk"
    list_display = ["name", "deidentify", "created_at"]
    search_fields = ["name"]


@admin.register(Patient)
class PatientAdmin(CompleteDeletionMixin, admin.ModelAdmin):
    list_display = ["pseudonym", "project", "created_at"]
    list_filter = ["project"]
    search_fields = ["pseudonym"]

    def delete_one(self, request: HttpRequest, obj: Patient) -> None:
        """Remove each series of the patient completely (the patient goes with the last one)."""
        for series in Series.objects.filter(study__patient=obj).order_by("pk"):
            services.delete_series(series, actor=request.user, reason=admin_reason(request))
        Patient.objects.filter(pk=obj.pk).delete()  # a patient without series


@admin.register(Study)
class StudyAdmin(CompleteDeletionMixin, admin.ModelAdmin):
    list_display = ["study_instance_uid", "project", "patient", "study_date"]
    list_filter = ["project"]
    search_fields = ["study_instance_uid"]
    raw_id_fields = ["patient"]

    def delete_one(self, request: HttpRequest, obj: Study) -> None:
        """Remove each series of the study completely (the study goes with the last one)."""
        for series in obj.series.order_by("pk"):
            services.delete_series(series, actor=request.user, reason=admin_reason(request))
        Study.objects.filter(pk=obj.pk).delete()  # a study without series


@admin.register(Series)
class SeriesAdmin(CompleteDeletionMixin, admin.ModelAdmin):
    list_display = ["series_instance_uid", "project", "modality", "rows", "columns", "num_instances", "burned_in_annotation"]
    list_filter = ["project", "modality", "source_format", "burned_in_annotation"]
    search_fields = ["series_instance_uid"]
    raw_id_fields = ["study"]

    def delete_one(self, request: HttpRequest, obj: Series) -> None:
        """Remove the series completely (files, revisions, jobs...) with an audit record."""
        services.delete_series(obj, actor=request.user, reason=admin_reason(request))


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["sop_instance_uid", "project", "series", "instance_number", "slice_location"]
    list_filter = ["project"]
    search_fields = ["sop_instance_uid"]
    raw_id_fields = ["series"]

    def has_delete_permission(self, request: HttpRequest, obj: Instance | None = None) -> bool:
        return False  # one image of a series: delete the series (or its upload) instead


@admin.register(Upload)
class UploadAdmin(CompleteDeletionMixin, admin.ModelAdmin):
    list_display = ["id", "project", "created_by", "source", "num_files", "num_instances", "created_at"]
    list_filter = ["project", "source"]
    raw_id_fields = ["series"]

    def delete_one(self, request: HttpRequest, obj: Upload) -> None:
        """Remove every series of the upload completely, then the upload, with audit records."""
        services.delete_upload(obj, actor=request.user, reason=admin_reason(request))
