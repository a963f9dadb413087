"""App config of administration: project settings, team and assignment pages and commands."""

from __future__ import annotations

from django.apps import AppConfig


class AdministrationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "administration"
    verbose_name = "Project administration"
