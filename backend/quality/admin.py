"""Django admin for the automatic QC results (computed by the system, read-only)."""

from __future__ import annotations

from django.contrib import admin

from .models import QCFlag, QCSummary


@admin.register(QCSummary)
class QCSummaryAdmin(admin.ModelAdmin):
    list_display = ["revision", "modality", "flagged_count", "priority", "confidence", "computed_at"]

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


@admin.register(QCFlag)
class QCFlagAdmin(admin.ModelAdmin):
    list_display = ["revision", "name", "value", "unit", "flagged"]
    list_filter = ["name", "flagged"]

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False
