"""Helpers for the export tests: ingested X-rays and CT series with stored label revisions (no model)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

from annotation import services
from annotation.models import MaskRevision, RevisionSource, RevisionStatus
from exports import pixels
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from proposal_helpers import ct_series_files, xray_png


def two_lungs(shape: tuple[int, ...]) -> np.ndarray:
    """Labels of ``shape`` (``(H, W)`` or ``(D, H, W)``): right lung (1) on the image left, left lung (2) on the right."""
    labels = np.zeros(shape, np.uint8)
    h, w = shape[-2:]
    labels[..., h // 4: 3 * h // 4, w // 8: 3 * w // 8] = 1
    labels[..., h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8] = 2
    if labels.ndim == 3:
        labels[0] = 0  # an empty first slice
        labels[-1, h // 4: h // 2, w // 8: 3 * w // 8] = 0  # and an uneven last one
    return labels


def add_xray(project: Any, capture: Any, seed: int = 0, status: str = RevisionStatus.APPROVED,
             size: tuple[int, int] = (96, 80)) -> MaskRevision:
    """Ingest one synthetic X-ray (its own patient) and store a label revision with ``status``."""
    with capture(execute=False):  # no model proposal
        result = ingest(project, [SourceFile(f"chest-{seed}.png", xray_png(size=size, seed=seed))])
    series = Series.objects.get(pk=result.series[0].pk)
    return services.create_revision(
        series=series, instance=series.instances.get(), labels=two_lungs((series.rows, series.columns)),
        source=RevisionSource.PERSON, status=status, spacing=(0.5, 0.5), method="manual")


def add_ct(project: Any, capture: Any, depth: int = 6, size: int = 32, status: str = RevisionStatus.APPROVED,
           files: list[tuple[str, bytes]] | None = None) -> MaskRevision:
    """Ingest a synthetic CT series and store a label revision on its instance grid."""
    with capture(execute=False):
        result = ingest(project, [SourceFile(n, d) for n, d in (files or ct_series_files(depth=depth, size=size))])
    series = Series.objects.get(pk=result.series[0].pk)
    instances = pixels.ordered_instances(series)
    geometry = pixels.series_geometry(series, instances)
    return services.create_revision(
        series=series, instance=None, labels=two_lungs((len(instances), series.rows, series.columns)),
        source=RevisionSource.PERSON, status=status, spacing=tuple(reversed(geometry["spacing_xyz"])),
        geometry=geometry, method="manual")


def archive_of(job: Any) -> zipfile.ZipFile:
    """The stored archive of a finished export job, opened."""
    from django.core.files.storage import default_storage

    with default_storage.open(job.archive.name, "rb") as handle:
        return zipfile.ZipFile(io.BytesIO(handle.read()))
