"""Fast annotation targets for backend tests: an X-ray series row with one instance and a model proposal,
without ingesting an image (its task opens through the real signal)."""

from __future__ import annotations

from typing import Any

import numpy as np

from annotation import services, workflow
from annotation.models import AnnotationTask, MaskRevision, RevisionSource, RevisionStatus
from imaging.models import Instance, Patient, Series, Study

SIZE = 40
SPACING = (4.0, 4.0)  # 400 lung pixels × 16 mm² = 6400 mm²: a plausible area, so QC flags only low confidence


def proposal_labels() -> np.ndarray:
    """``(40, 40)``: right lung rows 10-29 × cols 5-14, left lung rows 10-29 × cols 25-34 (200 px each)."""
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[10:30, 5:15] = 1
    labels[10:30, 25:35] = 2
    return labels


def with_extra_left(k: int) -> np.ndarray:
    """The proposal plus ``k`` left-lung pixels on row 2 (background): Dice left = 400 / (400 + k)."""
    labels = proposal_labels()
    labels[2, :k] = 2
    return labels


def upload(labels: np.ndarray, seconds: float | None = None) -> workflow.MaskUpload:
    return workflow.MaskUpload(shape=(1, SIZE, SIZE), data=labels.tobytes(), time_spent_s=seconds)


def make_target(project: Any, index: int, model: Any, confidence: float) -> tuple[AnnotationTask, MaskRevision]:
    patient = Patient.objects.create(project=project, pseudonym=f"P{index}")
    study = Study.objects.create(project=project, patient=patient, study_instance_uid=f"1.2.{index}")
    series = Series.objects.create(project=project, study=study, series_instance_uid=f"1.2.{index}.1", modality="DX",
                                   rows=SIZE, columns=SIZE, num_instances=1)
    instance = Instance.objects.create(project=project, series=series, sop_instance_uid=f"1.2.{index}.1.1",
                                       sop_class_uid="1.2.840.10008.5.1.4.1.1.7", file="none.dcm", file_size=1,
                                       sha256="0" * 64)
    proposal = services.create_revision(
        series=series, instance=instance, labels=proposal_labels(), source=RevisionSource.MODEL,
        status=RevisionStatus.PROPOSED, spacing=SPACING, model_version=model, method="model", confidence=confidence)
    return AnnotationTask.objects.get(target_key=proposal.target_key), proposal
