"""Django admin for the model registry and proposal jobs (jobs are read-only: workers own them)."""

from __future__ import annotations

from django.contrib import admin

from .models import ModelVersion, ProposalJob, TrainingRun


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "modality", "architecture", "status", "created_at"]
    list_filter = ["modality", "status"]
    readonly_fields = ["sha256", "card", "metrics", "weights_file", "created_at", "updated_at"]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["name", "modality", "started_at", "finished_at"]


@admin.register(ProposalJob)
class ProposalJobAdmin(admin.ModelAdmin):
    list_display = ["id", "series", "modality", "model_version", "status", "attempts", "method"]
    list_filter = ["status", "modality", "method"]

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False
