"""App config for retraining: dataset versions of curated labels, training runs, evaluations, gated promotion.

Sits to the right of annotation and quality in the data flow (it reads curated revisions) and
calls :mod:`modeling` services for everything that touches ``ml`` (training, evaluation).
"""

from __future__ import annotations

from django.apps import AppConfig


class RetrainingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "retraining"
