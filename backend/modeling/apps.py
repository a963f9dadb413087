"""App config for modeling: model registry, proposal jobs (Celery tasks), periodic schedules."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ModelingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "modeling"

    def ready(self) -> None:
        from celery.signals import beat_init

        from . import receivers

        post_migrate.connect(receivers.seed_registry_after_migrate, sender=self)
        # post_migrate comes after the whole migrate run: django_celery_beat's tables exist by then
        post_migrate.connect(receivers.ensure_schedules, sender=self)
        beat_init.connect(receivers.ensure_schedules, dispatch_uid="modeling.ensure_schedules_on_beat", weak=False)
        receivers.connect_ingest_hook()
