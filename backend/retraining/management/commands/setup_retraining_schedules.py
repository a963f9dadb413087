"""``manage.py setup_retraining_schedules``: a retraining policy and nightly check for every project (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from retraining.schedules import ensure_all_policies


class Command(BaseCommand):
    help = "Create the retraining policy and nightly django-celery-beat check of every project and modality."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{ensure_all_policies()} retraining policies")
