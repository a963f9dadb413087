"""App config of exports: dataset exports (NIfTI, PNG, DICOM SEG, nnU-Net v2, COCO, MONAI) and label imports."""

from __future__ import annotations

from django.apps import AppConfig


class ExportsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "exports"
    verbose_name = "Dataset exports and label imports"
