"""Helpers for retraining tests: X-ray targets with a curated (person, approved in review) revision."""

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


def curated_xray(project: Project, seed: int, patient: str | None = None, status: str = RevisionStatus.APPROVED,
                 shift: int = 0) -> MaskRevision:
    """Ingest one synthetic X-ray (its own patient unless ``patient``) and store a person's revision of it."""
    result = ingest(project, [SourceFile(f"cxr-{seed}.png", xray_png(seed=seed))], patient_key=patient)
    series = Series.objects.get(pk=result.series[0].pk)
    return annotation_services.create_revision(
        series=series, instance=series.instances.get(), labels=lung_labels((series.rows, series.columns), shift),
        source=RevisionSource.PERSON, status=status, method="manual")


def curate_again(revision: MaskRevision, shift: int, status: str = RevisionStatus.APPROVED) -> MaskRevision:
    """A newer person revision of the same target."""
    return annotation_services.create_revision(
        series=revision.series, instance=revision.instance, labels=lung_labels(tuple(revision.shape), shift),
        source=RevisionSource.PERSON, status=status, method="manual", parent=revision)


#: Config overrides that keep a training run to seconds on CPU (tiny model, 1 epoch).
TINY_TRAINING = {"train": {"epochs": 1, "batch_size": 2, "val_batch_size": 2, "max_minutes": None, "num_threads": 1,
                           "amp": False, "warmup_epochs": 0, "log_every": 1, "early_stopping_patience": 0},
                 "data": {"val_max_cases": 10}}


def curated_dataset(project: Project, minimum: int = 1, limit: int = 30) -> list[MaskRevision]:
    """Curated X-rays, one patient each, until train, val and test each hold ``minimum`` patients."""
    from django.conf import settings

    from retraining.datasets import seeded_split, split_rule

    seed_rule, test, val = split_rule()
    revisions: list[MaskRevision] = []
    counts = {"train": 0, "val": 0, "test": 0}
    for seed in range(limit):
        revision = curated_xray(project, seed)
        patient = revision.series.study.patient
        counts[seeded_split(seed_rule, test, val, project.pk, "cxr", patient.pseudonym)] += 1
        revisions.append(revision)
        if min(counts.values()) >= minimum:
            return revisions
    raise RuntimeError(f"no split with {minimum} patient(s) each after {limit} images ({counts}, {settings})")
