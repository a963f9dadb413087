"""App config of the workbench pages."""

from __future__ import annotations

from django.apps import AppConfig


class WorkbenchConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workbench"
    verbose_name = "Annotator workbench"
