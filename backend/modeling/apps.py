"""App config for modeling: model registry, proposal jobs (Celery tasks)."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ModelingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "modeling"

    def ready(self) -> None:
        from . import receivers

        post_migrate.connect(receivers.seed_registry_after_migrate, sender=self)
        receivers.connect_ingest_hook()
