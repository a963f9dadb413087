"""App config for imaging: projects, patients, studies, series, instances; ingest and WADO."""

from django.apps import AppConfig


class ImagingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "imaging"
