"""Helpers for retraining tests: X-ray targets with a curated (person, submitted) revision."""

from __future__ import annotations

import numpy as np

from annotation import services as annotation_services
from annotation.models import MaskRevision, RevisionSource, RevisionStatus
from imaging.models import Project, Series
from imaging.services import ingest
from imaging.sources import SourceFile
from proposal_helpers import xray_png


def lung_labels(shape: tuple[int, int], shift: int = 0) -> np.ndarray:
    """``(H, W)`` labels: an ellipse per lung (1 on the image's left half = patient's right)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    labels = np.zeros((h, w), np.uint8)
    for value, cx in ((1, 0.3 * w + shift), (2, 0.7 * w + shift)):
        labels[((x - cx) / (0.16 * w)) ** 2 + ((y - 0.5 * h) / (0.3 * h)) ** 2 <= 1] = value
    return labels


def curated_xray(project: Project, seed: int, patient: str | None = None, status: str = RevisionStatus.SUBMITTED,
                 shift: int = 0) -> MaskRevision:
    """Ingest one synthetic X-ray (its own patient unless ``patient``) and store a person's revision of it."""
    result = ingest(project, [SourceFile(f"cxr-{seed}.png", xray_png(seed=seed))], patient_key=patient)
    series = Series.objects.get(pk=result.series[0].pk)
    return annotation_services.create_revision(
        series=series, instance=series.instances.get(), labels=lung_labels((series.rows, series.columns), shift),
        source=RevisionSource.PERSON, status=status, method="manual")


def curate_again(revision: MaskRevision, shift: int, status: str = RevisionStatus.SUBMITTED) -> MaskRevision:
    """A newer person revision of the same target."""
    return annotation_services.create_revision(
        series=revision.series, instance=revision.instance, labels=lung_labels(tuple(revision.shape), shift),
        source=RevisionSource.PERSON, status=status, method="manual", parent=revision)
