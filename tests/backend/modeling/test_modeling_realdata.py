"""Proposals on real data from ../shared/data with the shipped models (skipped when either is absent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from annotation.models import MaskRevision
from annotation.services import read_labels
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from modeling import services
from modeling.models import JobStatus, ModelVersion, ProposalJob
from quality.models import QCFlag

pytestmark = [pytest.mark.realdata, pytest.mark.django_db]


def _shipped(modality: str) -> bool:
    from ml import list_cards

    return any(card.modality == modality for card in list_cards())


def _propose(project: Any, files: list[tuple[str, bytes]], capture: Any) -> tuple[ProposalJob, np.ndarray]:
    with capture(execute=True):
        result = ingest(project, [SourceFile(name, data) for name, data in files])
    series = Series.objects.get(pk=result.series[0].pk)
    job = ProposalJob.objects.get(series=series)
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job, read_labels(MaskRevision.objects.get(pk=job.revision_id))


def test_shipped_xray_model_proposes_both_lungs_on_the_right_sides(project, shared_data: Path,
                                                                   django_capture_on_commit_callbacks):
    if not _shipped("cxr"):
        pytest.skip("no shipped chest X-ray model in ml/weights yet")
    services.sync_registry()
    image = shared_data / "cxr" / "montgomery" / "images" / "MCUCXR_0196_1.png"
    reference = np.array(Image.open(shared_data / "cxr" / "montgomery" / "labels" / image.name))
    job, labels = _propose(project, [(image.name, image.read_bytes())], django_capture_on_commit_callbacks)
    assert job.method == "model" and labels.shape == reference.shape
    for value in (1, 2):
        both = np.count_nonzero((labels == value) & (reference == value))
        dice = 2 * both / (np.count_nonzero(labels == value) + np.count_nonzero(reference == value))
        assert dice > 0.8, f"label {value}: Dice {dice:.3f} against the reference"
    # the patient's right lung (1) is on the image's left
    assert np.argwhere(labels == 1)[:, 1].mean() < np.argwhere(labels == 2)[:, 1].mean()
    assert not QCFlag.objects.get(revision_id=job.revision_id, name="empty_side").flagged


def test_real_ct_dicom_series_gets_a_plausible_proposal(project, shared_data: Path, ct_version_without_weights,
                                                        django_capture_on_commit_callbacks):
    """With a shipped CT model it must run (no fallback); without one the classical fallback is checked."""
    from ml import resolve

    shipped = _shipped("ct")
    if shipped:
        services.sync_registry()
        services.promote(ModelVersion.objects.get(name=resolve("ct").name))
    folder = shared_data / "ct" / "dicom" / "lungdx_A0001"
    files = [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.dcm"))]
    job, labels = _propose(project, files, django_capture_on_commit_callbacks)
    revision = MaskRevision.objects.get(pk=job.revision_id)
    assert job.method == ("model" if shipped else "classical"), job.fallback_reason
    assert labels.shape == (64, 512, 512) and revision.size_unit == "mL"
    voxel_ml = float(np.prod(revision.spacing)) / 1000.0
    assert revision.right_size == pytest.approx(np.count_nonzero(labels == 1) * voxel_ml)
    assert revision.left_size == pytest.approx(np.count_nonzero(labels == 2) * voxel_ml)
    assert revision.right_size > 300 and revision.left_size > 300
    # whatever the model's accuracy, QC must flag a total volume outside the plausible adult range
    total = revision.right_size + revision.left_size
    assert QCFlag.objects.get(revision=revision, name="lung_size").flagged == (not 800 <= total <= 10_000), total
    # standard axial orientation: the patient's right (label 1) on the low column indices
    assert np.argwhere(labels == 1)[:, 2].mean() < np.argwhere(labels == 2)[:, 2].mean()
