"""``manage.py sync_model_registry``: register the shipped model cards as model versions."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from modeling.models import ModelVersion
from modeling.services import sync_registry


class Command(BaseCommand):
    help = "Create or update a ModelVersion for every model card in ml/weights (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        versions = sync_registry()
        for version in ModelVersion.objects.filter(pk__in=[v.pk for v in versions]):
            self.stdout.write(f"{version.name}: {version.modality} {version.status} sha256={version.sha256[:12]}")
        self.stdout.write(self.style.SUCCESS(f"{len(versions)} model version(s) registered"))
