"""App config for quality: automatic QC of masks, dashboard metrics."""

from __future__ import annotations

from django.apps import AppConfig


class QualityConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "quality"

    def ready(self) -> None:
        from annotation.signals import revision_created

        from . import receivers

        revision_created.connect(receivers.qc_new_revision, dispatch_uid="quality.qc_new_revision")
