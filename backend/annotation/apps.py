"""App config for annotation: mask revisions (append-only lineage), review, editing API."""

from __future__ import annotations

from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"

    def ready(self) -> None:
        from imaging.signals import series_deleting
        from modeling.signals import proposal_ready

        from . import receivers

        proposal_ready.connect(receivers.store_proposal, dispatch_uid="annotation.store_proposal")
        series_deleting.connect(receivers.purge_series, dispatch_uid="annotation.purge_series")

        from . import workflow
        from .signals import revision_created

        revision_created.connect(workflow.on_revision_created, dispatch_uid="annotation.open_task")

        from .review import measures

        revision_created.connect(measures.on_revision_created, dispatch_uid="annotation.review.measure_edit")
