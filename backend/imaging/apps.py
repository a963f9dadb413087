"""App config for imaging: projects, patients, studies, series, instances; ingest and WADO."""

from django.apps import AppConfig


class ImagingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "imaging"

    def ready(self) -> None:
        """Silence pydicom's value-validation warnings: they quote element values (identifiers)."""
        from pydicom import config

        config.settings.reading_validation_mode = config.IGNORE
