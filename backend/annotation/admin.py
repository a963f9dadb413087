"""Django admin for mask lineage and annotation tasks.

Revisions, drafts and task actions are append-only records: the admin shows them and never
changes or deletes them.
"""

from __future__ import annotations

from django.contrib import admin

from .models import AnnotationTask, Draft, MaskRevision, TaskAction


class ReadOnlyAdmin(admin.ModelAdmin):
    """Lists and shows rows; no add, change or delete."""

    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


@admin.register(MaskRevision)
class MaskRevisionAdmin(ReadOnlyAdmin):
    list_display = ["id", "series", "number", "source", "method", "status", "created_at"]
    list_filter = ["source", "status", "method"]


@admin.register(TaskAction)
class TaskActionAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "kind", "author", "reason", "time_spent_s", "created_at"]
    list_filter = ["kind", "reason"]


@admin.register(Draft)
class DraftAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "author", "saved_at"]
    exclude = ["data"]


@admin.register(AnnotationTask)
class AnnotationTaskAdmin(admin.ModelAdmin):
    """Leads may (re)assign a task or release a stale claim here."""

    list_display = ["id", "series", "status", "assignee", "claimed_by", "lease_expires_at", "time_spent_s"]
    list_filter = ["status"]
    fields = ["status", "assignee", "claimed_by", "lease_expires_at"]
