"""Admin of exports: export jobs (read-only) and each project's data terms (licence, source)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import ExportJob, ProjectDataTerms


@admin.register(ProjectDataTerms)
class ProjectDataTermsAdmin(admin.ModelAdmin):
    list_display = ["project", "updated_at"]


@admin.register(ExportJob)
class ExportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "format", "status", "case_count", "dataset_hash", "created_at"]
    list_filter = ["format", "status"]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False
