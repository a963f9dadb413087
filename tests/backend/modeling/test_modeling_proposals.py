"""Proposal jobs in the embedded (in-process) mode: ingest → job → model → revision → QC → API."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from django.core.files.storage import default_storage

from accounts.models import Role
from annotation import labelmaps
from annotation import services as annotation_services
from annotation.models import MaskRevision, RevisionSource, RevisionStatus
from annotation.services import read_labels
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from modeling import inference, services
from modeling.models import JobStatus, ModelVersion, ProposalJob
from quality.models import QCFlag, QCSummary

from proposal_helpers import TINY_CXR, ct_series_files, write_tiny_cxr_model, xray_png

pytestmark = pytest.mark.django_db


def _ingest(project: Any, files: list[tuple[str, bytes]], capture: Any, **kwargs: Any) -> list[Series]:
    with capture(execute=True):
        result = ingest(project, [SourceFile(name, data) for name, data in files], **kwargs)
    return list(Series.objects.filter(pk__in=[s.pk for s in result.series]))


def test_xray_upload_gets_one_model_revision_with_qc(project, tiny_cxr_version, django_capture_on_commit_callbacks):
    (series,) = _ingest(project, [("chest.png", xray_png())], django_capture_on_commit_callbacks)
    job = ProposalJob.objects.get(series=series)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1 and job.method == "model"
    assert job.model_version == tiny_cxr_version and job.queue == "cpu"
    revision = MaskRevision.objects.get(pk=job.revision_id)
    assert revision.proposal_job == job and revision.number == 1 and revision.parent is None
    assert (revision.source, revision.status) == (RevisionSource.MODEL, RevisionStatus.PROPOSED)
    assert revision.instance == series.instances.get() and revision.labelmap_format == "png"
    labels = read_labels(revision)
    assert labels.shape == (80, 96) == tuple(revision.shape) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert revision.right_size == np.count_nonzero(labels == 1) and revision.size_unit == "px"
    assert revision.confidence is not None and 0.0 <= revision.confidence <= 1.0
    names = set(QCFlag.objects.filter(revision=revision).values_list("name", flat=True))
    assert names == {"components", "lung_size", "side_ratio", "border", "empty_side", "confidence"}
    assert QCSummary.objects.get(revision=revision).flagged_count == QCFlag.objects.filter(
        revision=revision, flagged=True).count()


def test_proposals_are_idempotent_and_the_model_loads_once(project, tiny_cxr_version, django_capture_on_commit_callbacks):
    loads_before = inference.LOAD_COUNT.get(TINY_CXR, 0)
    first, second = (_ingest(project, [(f"c{i}.png", xray_png(seed=i))], django_capture_on_commit_callbacks)[0]
                     for i in range(2))
    assert inference.LOAD_COUNT[TINY_CXR] - loads_before <= 1  # cached per process (0 if an earlier test loaded it)
    job = ProposalJob.objects.get(series=first)
    with django_capture_on_commit_callbacks(execute=True):
        again = services.queue_proposals_for_series(first)
    assert [j.pk for j in again] == [job.pk]
    assert services.run_job(job.pk) is None  # already succeeded: nothing runs
    assert MaskRevision.objects.filter(series=first).count() == 1
    assert ProposalJob.objects.get(pk=job.pk).attempts == 1
    assert MaskRevision.objects.filter(series=second).count() == 1


def test_ct_proposal_falls_back_to_the_classical_method(project, ct_version_without_weights,
                                                         django_capture_on_commit_callbacks):
    (series,) = _ingest(project, ct_series_files(depth=24, size=64), django_capture_on_commit_callbacks)
    job = ProposalJob.objects.get(series=series)
    assert job.status == JobStatus.SUCCEEDED and job.method == "classical"
    assert "ct-missing-weights" in job.fallback_reason
    revision = MaskRevision.objects.get(pk=job.revision_id)
    assert revision.method == "classical" and revision.note.startswith("classical fallback:")
    assert revision.labelmap_format == "nii.gz" and revision.shape == [24, 64, 64] and revision.size_unit == "mL"
    labels = read_labels(revision)
    assert np.count_nonzero(labels == 1) > 0 and np.count_nonzero(labels == 2) > 0
    # standard orientation: the patient's right lung (label 1) on the low column indices
    assert np.argwhere(labels == 1)[:, 2].mean() < np.argwhere(labels == 2)[:, 2].mean()
    assert revision.geometry["instance_ids"] == list(series.instances.order_by("slice_location").values_list("id", flat=True))
    assert QCFlag.objects.filter(revision=revision, name="slice_discontinuity").exists()


def test_ct_label_map_is_on_the_stored_instance_grid(project, ct_version_without_weights,
                                                     django_capture_on_commit_callbacks):
    """Rows flipped in patient space: the mask still matches the stored pixels, sides follow the patient."""
    from proposal_helpers import chest_phantom

    files = ct_series_files(depth=24, size=64, orientation=(-1, 0, 0, 0, 1, 0))
    (series,) = _ingest(project, files, django_capture_on_commit_callbacks)
    revision = MaskRevision.objects.get(pk=ProposalJob.objects.get(series=series).revision_id)
    labels = read_labels(revision)
    assert labels.shape == (24, 64, 64)
    lungs = chest_phantom(24, 64) == -850.0  # the phantom's lung voxels, in stored pixel order
    dice = 2 * np.count_nonzero((labels > 0) & lungs) / (np.count_nonzero(labels) + np.count_nonzero(lungs))
    assert dice > 0.8
    # columns now run toward the patient's right: the right lung (1) sits on the high column indices
    assert np.argwhere(labels == 1)[:, 2].mean() > np.argwhere(labels == 2)[:, 2].mean()


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 1, 0)], ids=["lps", "rows_flipped"])
def test_ct_series_with_a_missing_instance_gets_one_mask_slice_per_instance(project, ct_version_without_weights,
                                                                          django_capture_on_commit_callbacks,
                                                                          orientation):
    """The reader fills the gap by interpolation; the stored mask keeps one slice per instance."""
    from proposal_helpers import chest_phantom

    files = ct_series_files(depth=24, size=64, orientation=orientation)
    del files[10]
    (series,) = _ingest(project, files, django_capture_on_commit_callbacks)
    revision = MaskRevision.objects.get(pk=ProposalJob.objects.get(series=series).revision_id)
    labels = read_labels(revision)
    assert labels.shape == (23, 64, 64) and len(revision.geometry["instance_ids"]) == 23
    assert any("interpolated" in w for w in revision.geometry["warnings"])
    # slices go along the normal, row x column: +z for LPS rows, -z when the rows run toward the right
    up = orientation[0] > 0
    file_of_grid = list(range(24)) if up else list(range(23, -1, -1))  # the file (z / 5 mm) at each grid slice
    gap = file_of_grid.index(10)
    lungs = chest_phantom(24, 64)[[f for f in file_of_grid if f != 10]] == -850.0
    assert _dice(labels > 0, lungs) > 0.8
    # volumes, QC and the NIfTI download are on the series' regular grid: the gap is counted
    assert revision.geometry["grid_depth"] == 24
    assert [g for g, _, _ in revision.geometry["source_slices"]] == [k for k in range(24) if k != gap]
    grid = labelmaps.to_regular_grid(labels, revision.geometry)
    assert np.array_equal(np.delete(grid, gap, axis=0), labels) and np.array_equal(grid[gap], labels[gap - 1])
    voxel_ml = float(np.prod(revision.spacing)) / 1000.0
    assert revision.right_size + revision.left_size == pytest.approx(np.count_nonzero(grid) * voxel_ml)
    assert revision.right_size + revision.left_size > np.count_nonzero(labels) * voxel_ml
    size_flag = QCFlag.objects.get(revision=revision, name="lung_size")
    assert size_flag.value == pytest.approx(revision.right_size + revision.left_size)
    image = _nifti_download(revision)
    assert image.shape == (64, 64, 24)
    assert np.array_equal(np.transpose(np.asarray(image.dataobj), (2, 1, 0)), grid)
    # every exported voxel (i = column, j = row, k = grid slice) lies where the series puts that pixel
    pixel = 350.0 / 64
    for k, j, i in [(0, 0, 0), (17, 20, 13), (gap, 40, 50)]:
        lps = np.array([-175.0 * orientation[0] + orientation[0] * i * pixel, -175.0 + j * pixel,
                        5.0 * file_of_grid[k]])
        assert np.allclose(image.affine @ [i, j, k, 1], [-lps[0], -lps[1], lps[2], 1.0])  # RAS = (-L, -P, S)


def test_ct_series_with_a_gantry_tilt_is_exported_on_the_desheared_grid(project, ct_version_without_weights,
                                                                        django_capture_on_commit_callbacks):
    """Stored: one slice per instance on its own pixels. Exported: the de-sheared grid, shear undone."""
    from proposal_helpers import chest_phantom

    drift = 5.0 * np.tan(np.radians(15.0))  # mm per slice along y
    files = ct_series_files(depth=24, size=64, drift_y=drift)
    (series,) = _ingest(project, files, django_capture_on_commit_callbacks)
    revision = MaskRevision.objects.get(pk=ProposalJob.objects.get(series=series).revision_id)
    assert any("gantry tilt" in w for w in revision.geometry["warnings"])
    labels = read_labels(revision)
    phantom_lungs = chest_phantom(24, 64) == -850.0
    assert labels.shape == (24, 64, 64) and _dice(labels > 0, phantom_lungs) > 0.8
    image = _nifti_download(revision)
    exported = np.transpose(np.asarray(image.dataobj), (2, 1, 0)) > 0
    # on the de-sheared grid, instance k's pixels sit k * drift / pixel rows lower
    pixel = 350.0 / 64
    physical = np.stack([ndimage.shift(phantom_lungs[k], (k * drift / pixel, 0), order=0) for k in range(24)])
    assert _dice(exported, physical) > 0.8
    assert _dice(exported, physical) > _dice(exported, phantom_lungs) + 0.02


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _nifti_download(revision: MaskRevision) -> Any:
    import gzip

    import nibabel as nib

    data, content_type, _ = annotation_services.export(revision, "nifti")
    assert content_type == "application/gzip"
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def test_unreadable_image_fails_after_retries_and_keeps_the_error(project, tiny_cxr_version, make_member, client_for,
                                                                 django_capture_on_commit_callbacks):
    (series,) = _ingest(project, [("chest.png", xray_png())], django_capture_on_commit_callbacks)
    instance = series.instances.get()
    default_storage.delete(instance.file.name)
    other = ModelVersion.objects.create(name="tiny-2", modality="cxr", weights_file=tiny_cxr_version.weights_file,
                                        sha256=tiny_cxr_version.sha256)
    with django_capture_on_commit_callbacks(execute=True):
        (job,) = services.queue_proposals_for_series(series, other)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "FileNotFoundError" in job.error
    assert job.attempts == 1 + services_max_retries()
    assert not MaskRevision.objects.filter(proposal_job=job).exists()
    shown = client_for(make_member(project, Role.ANNOTATOR)).get("/api/proposals/", {"status": "failed"}).json()
    assert [(j["id"], j["status"]) for j in shown["results"]] == [(job.pk, "failed")]
    assert "FileNotFoundError" in shown["results"][0]["error"]


def services_max_retries() -> int:
    from modeling.tasks import MAX_RETRIES

    return MAX_RETRIES


def test_modality_mismatch_is_refused(project, tiny_cxr_version, ct_version_without_weights,
                                      django_capture_on_commit_callbacks):
    (series,) = _ingest(project, [("chest.png", xray_png())], django_capture_on_commit_callbacks)
    with pytest.raises(services.ModalityMismatchError):
        services.queue_proposals_for_series(series, ct_version_without_weights)


def test_registry_keeps_exactly_one_champion_per_modality(db, tmp_path):
    from django.db import IntegrityError, transaction

    from ml import ModelCard

    cards = [ModelCard.from_file(write_tiny_cxr_model(tmp_path / n, name=n, seed=i)) for i, n in enumerate(["m-a", "m-b"])]
    versions = services.sync_registry(cards)
    statuses = {v.name: ModelVersion.objects.get(pk=v.pk).status for v in versions}
    existing = ModelVersion.objects.filter(modality="cxr", status="champion")
    assert existing.count() == 1
    candidate = ModelVersion.objects.filter(modality="cxr", status="candidate").first()
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=candidate.pk).update(status="champion")
    services.promote(candidate)
    assert list(ModelVersion.objects.filter(modality="cxr", status="champion")) == [candidate]
    again = services.sync_registry(cards)  # idempotent, statuses kept
    assert len(again) == 2 and ModelVersion.objects.get(pk=candidate.pk).status == "champion"
    assert set(statuses.values()) <= {"champion", "candidate"}


def test_shipped_cards_are_registered_by_the_command(db):
    from django.core.management import call_command

    from ml import list_cards

    call_command("sync_model_registry")
    shipped = list_cards()
    assert ModelVersion.objects.filter(name__in=[c.name for c in shipped]).count() == len(shipped)
    for modality in {c.modality for c in shipped}:
        assert ModelVersion.objects.filter(modality=modality, status="champion").count() == 1


def test_api_status_labelmap_download_and_rerun(project, other_project, tiny_cxr_version, make_member, client_for,
                                                 django_capture_on_commit_callbacks):
    import gzip

    import nibabel as nib

    (series,) = _ingest(project, [("chest.png", xray_png())], django_capture_on_commit_callbacks)
    annotator = make_member(project, Role.ANNOTATOR)
    engineer = make_member(project, Role.ML_ENGINEER)
    outsider = make_member(other_project, Role.ML_ENGINEER)
    client = client_for(annotator)

    jobs = client.get("/api/proposals/", {"series": series.pk}).json()["results"]
    assert [j["status"] for j in jobs] == ["succeeded"] and jobs[0]["model_name"] == TINY_CXR
    summary = client.get("/api/proposals/summary/", {"study": series.study_id}).json()
    assert summary["ready"] is True and summary["series"][0]["counts"] == {"succeeded": 1}
    assert client_for(outsider).get("/api/proposals/", {"series": series.pk}).json()["results"] == []

    revision_id = jobs[0]["revision_id"]
    raw = client.get(f"/api/revisions/{revision_id}/labelmap/")
    assert raw.status_code == 200 and raw["X-Shape"] == "80,96" and raw["X-Dtype"] == "uint8"
    assert client.get(f"/api/annotation/revisions/{revision_id}/mask").content == raw.content
    labels = np.frombuffer(raw.content, np.uint8).reshape(80, 96)
    assert np.array_equal(labels, read_labels(MaskRevision.objects.get(pk=revision_id)))
    png = client.get(f"/api/revisions/{revision_id}/download/", {"kind": "png"})
    assert png["Content-Type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    nifti = client.get(f"/api/revisions/{revision_id}/download/", {"kind": "nifti"})
    image = nib.Nifti1Image.from_bytes(gzip.decompress(nifti.content))
    assert image.shape == (96, 80, 1)
    assert client.get(f"/api/revisions/{revision_id}/download/", {"kind": "tiff"}).status_code == 400
    assert client_for(outsider).get(f"/api/revisions/{revision_id}/labelmap/").status_code == 404
    qc = client.get(f"/api/qc/{revision_id}/").json()
    assert {f["name"] for f in qc["flags"]} >= {"components", "border", "confidence"}

    other = ModelVersion.objects.create(name="tiny-cxr-copy", modality="cxr", sha256=tiny_cxr_version.sha256,
                                        weights_file=tiny_cxr_version.weights_file)
    body = {"model_version": other.name, "series": series.pk}
    assert client.post("/api/proposals/rerun/", body, format="json").status_code == 403
    assert client_for(outsider).post("/api/proposals/rerun/", body, format="json").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(engineer).post("/api/proposals/rerun/", body, format="json")
    assert response.status_code == 202, response.content
    rerun = ProposalJob.objects.get(pk=response.json()[0]["id"])
    assert rerun.status == JobStatus.SUCCEEDED and rerun.model_version == other
    second = MaskRevision.objects.get(pk=rerun.revision_id)
    assert second.number == 2 and second.parent_id == revision_id
    bad = client_for(engineer).post("/api/proposals/rerun/", {"model_version": "nope", "series": series.pk}, format="json")
    assert bad.status_code == 400 and "nope" in str(bad.json())


def test_routing_sends_each_modality_to_its_configured_queue(tmp_path):
    """``PLEURA_TASK_ROUTES`` decides the queue per modality task (read at start-up, so in a subprocess)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PLEURA_DATA_DIR": str(tmp_path),
           "PLEURA_TASK_ROUTES": json.dumps({"modeling.tasks.propose_ct": {"queue": "gpu"}})}
    code = "from modeling.services import queue_for; print(queue_for('ct'), queue_for('cxr'))"
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["gpu", "cpu"]


def test_stale_jobs_are_requeued_once(project, tiny_cxr_version, django_capture_on_commit_callbacks):
    """A job whose message was lost (still ``queued`` long after) runs when re-queued, exactly once."""
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    with django_capture_on_commit_callbacks(execute=False):  # no hooks run: we queue the job by hand
        result = ingest(project, [SourceFile("chest.png", xray_png())])
    series = Series.objects.get(pk=result.series[0].pk)
    job = ProposalJob.objects.get(series=series)  # stored with the upload; its message is never sent here
    ProposalJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, created_at=timezone.now() - timedelta(hours=2))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requeue_proposals", "--older-than", "3600")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and MaskRevision.objects.filter(series=series).count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requeue_proposals", "--older-than", "3600")
    assert MaskRevision.objects.filter(series=series).count() == 1
