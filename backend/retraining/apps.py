"""App config for retraining: dataset versions of curated labels, training runs, evaluations, gated promotion.

Sits to the right of annotation and quality in the data flow (it reads curated revisions) and
calls :mod:`modeling` services for everything that touches ``ml`` (training, evaluation).
"""

from __future__ import annotations

from django.apps import AppConfig


class RetrainingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "retraining"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from annotation.signals import revision_curated
        from imaging.models import Project

        from . import schedules

        revision_curated.connect(schedules.on_revision_curated, dispatch_uid="retraining.label_trigger")
        post_save.connect(_project_saved, sender=Project, dispatch_uid="retraining.project_policies")


def _project_saved(sender: type, instance: object, created: bool = False, **kwargs: object) -> None:
    """A new project gets its retraining policies and nightly checks."""
    if created:
        from modeling.models import ModelModality

        from .schedules import ensure_policy

        for modality in ModelModality.values:
            ensure_policy(instance, modality)  # type: ignore[arg-type]
