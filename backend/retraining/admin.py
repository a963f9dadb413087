"""Admin of retraining: policies are editable (schedules themselves are django-celery-beat's periodic tasks);
dataset versions, evaluations, gate decisions and champion changes are read-only history."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import ChampionChange, DatasetVersion, Evaluation, PromotionDecision, RetrainingPolicy


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: viewable, never added, changed or deleted here."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(RetrainingPolicy)
class RetrainingPolicyAdmin(admin.ModelAdmin):
    list_display = ["project", "modality", "enabled", "min_new_labels", "nightly_task", "last_check_at", "last_outcome"]
    list_filter = ["modality", "enabled"]
    readonly_fields = ["last_check_at", "last_outcome"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ["project", "modality", "number", "sha256", "counts", "created_at"]
    list_filter = ["modality"]


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ["model_version", "dataset_version", "test_set", "n_cases", "created_at"]
    list_filter = ["test_set"]


@admin.register(PromotionDecision)
class PromotionDecisionAdmin(ReadOnlyAdmin):
    list_display = ["candidate", "champion", "dataset_version", "promoted", "reason", "created_at"]


@admin.register(ChampionChange)
class ChampionChangeAdmin(ReadOnlyAdmin):
    list_display = ["modality", "previous", "champion", "kind", "actor", "reason", "created_at"]
