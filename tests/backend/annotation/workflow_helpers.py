"""Helpers for the workflow tests: an ingested X-ray / CT target with a stored model proposal (and its task)."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np

from annotation import services
from annotation.models import AnnotationTask, MaskRevision, RevisionSource, RevisionStatus
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from proposal_helpers import xray_png


def model_labels(shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` labels: a right-lung block on the left half, a left-lung block on the right half."""
    h, w = shape
    labels = np.zeros((h, w), np.uint8)
    labels[h // 4: 3 * h // 4, w // 8: 3 * w // 8] = 1
    labels[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8] = 2
    return labels


def xray_task(project: Any, capture: Any, confidence: float = 0.8, seed: int = 0,
              spacing: tuple[float, float] = (0.5, 0.5)) -> tuple[AnnotationTask, MaskRevision]:
    """Ingest a synthetic X-ray PNG and store a model proposal for it; the receiver opens its task."""
    with capture(execute=True):
        result = ingest(project, [SourceFile(f"chest-{seed}.png", xray_png(seed=seed))])
    series = Series.objects.get(pk=result.series[0].pk)
    instance = series.instances.get()
    revision = services.create_revision(
        series=series, instance=instance, labels=model_labels((series.rows, series.columns)),
        source=RevisionSource.MODEL, status=RevisionStatus.PROPOSED, spacing=spacing, method="model",
        confidence=confidence)
    return AnnotationTask.objects.get(target_key=revision.target_key), revision


def mask_upload(labels: np.ndarray, parent: int | None, **headers: str) -> dict[str, Any]:
    """Keyword arguments for APIClient.put/post of a gzip mask upload (``labels`` is ``(D, H, W)``)."""
    return {
        "data": gzip.compress(np.ascontiguousarray(labels, np.uint8).tobytes()),
        "content_type": "application/octet-stream",
        "headers": {"Content-Encoding": "gzip", "X-Shape": ",".join(map(str, labels.shape)), "X-Dtype": "uint8",
                    "X-Parent-Revision": "none" if parent is None else str(parent), **headers},
    }
