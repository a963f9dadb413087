"""Deleting a series or an upload completely: rows of every app, stored files, audit record, atomicity.

A CT series goes through the real path (API upload → proposal job, eager → model revision, QC,
annotation task), then a person's correction (a child revision with its task action) and a
draft, so that the lineage's PROTECT links, the job's PROTECT link and every cascade are present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from accounts.models import AuditEntry
from annotation import workflow
from annotation.models import AnnotationTask, Draft, MaskRevision, TaskAction
from imaging import services
from imaging.models import Instance, Patient, Series, Study, Upload
from imaging.signals import series_deleting
from modeling import services as modeling_services
from modeling.models import ModelVersion, ProposalJob
from proposal_helpers import ct_series_files
from quality.models import QCFlag, QCSummary

pytestmark = pytest.mark.django_db(transaction=True)  # real commits: files go only after them

ROWS = (Series, Instance, Study, Patient, MaskRevision, ProposalJob, AnnotationTask, Draft, TaskAction,
        QCSummary, QCFlag)


def stored_files(media: Path) -> list[str]:
    """Every file in the storage folder, relative to it."""
    return sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()) if media.exists() else []


@pytest.fixture
def ct_champion(db: Any) -> ModelVersion:
    """A CT champion without weights: each proposal takes the classical method (fast, no torch model)."""
    version = ModelVersion.objects.create(name="ct-missing-weights", modality="ct", sha256="0" * 64,
                                          weights_file="ml/weights/ct-missing-weights.pt")
    return modeling_services.promote(version)


@pytest.fixture
def corrected_series(project, ct_champion, make_member, client_for) -> dict[str, Any]:
    """An uploaded CT series with a model revision, a person's correction (child revision) and a draft."""
    admin = make_member(project, "admin", "lead")
    annotator = make_member(project, "annotator", "ann")
    files = [SimpleUploadedFile(name, data) for name, data in ct_series_files(depth=12, size=32)]
    response = client_for(admin).post("/api/uploads/", {"project": project.pk, "files": files}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["proposals"] == {"succeeded": 1}  # eager mode: the proposal ran on commit
    series = Series.objects.get(project=project)
    task = AnnotationTask.objects.get(series=series)
    workflow.claim(task.pk, annotator)
    mask = np.zeros((12, 32, 32), np.uint8)
    mask[:, 8:16, 8:14] = 1
    proposed = MaskRevision.objects.get(series=series)
    workflow.submit(task.pk, annotator, proposed.pk, workflow.MaskUpload(shape=mask.shape, data=mask.tobytes()))
    latest = MaskRevision.objects.filter(series=series).order_by("-number").first()
    Draft.objects.create(task=task, author=admin, parent_revision=latest, data=b"", shape=list(mask.shape))
    assert latest.parent_id is not None and TaskAction.objects.filter(revision=latest).exists()
    return {"series": series, "admin": admin, "annotator": annotator, "upload": Upload.objects.get(project=project)}


def test_api_delete_removes_every_row_and_file_with_an_audit_record(corrected_series, client_for,
                                                                    _isolated_storage: Path):
    series, admin = corrected_series["series"], corrected_series["admin"]
    before = stored_files(_isolated_storage)
    assert sum(f.endswith(".dcm") for f in before) == 12 and any(f.startswith("masks/") for f in before)
    assert all(model.objects.exists() for model in ROWS)

    forbidden = client_for(corrected_series["annotator"]).delete(f"/api/series/{series.pk}/")
    assert forbidden.status_code == 403 and Series.objects.filter(pk=series.pk).exists()

    response = client_for(admin).delete(f"/api/series/{series.pk}/", {"reason": "PHI burned into the pixels"},
                                        format="json")
    assert response.status_code == 204, response.content
    assert {model.__name__: model.objects.count() for model in ROWS} == {model.__name__: 0 for model in ROWS}
    assert stored_files(_isolated_storage) == []
    entry = AuditEntry.objects.get(action="series.delete")
    assert entry.actor == admin and entry.reason == "PHI burned into the pixels"
    assert entry.target_id == str(series.pk) and entry.project_id == series.project_id
    assert entry.before["series_instance_uid"] == series.series_instance_uid
    assert entry.before["removed"]["annotation.MaskRevision"] == 2 and entry.before["files"] == 12 + 2


def test_files_are_deleted_only_after_the_commit(corrected_series, _isolated_storage: Path):
    series = corrected_series["series"]
    before = stored_files(_isolated_storage)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        services.delete_series(series, actor=corrected_series["admin"], reason="test")
        assert not Series.objects.filter(pk=series.pk).exists()
        assert stored_files(_isolated_storage) == before  # not yet: the transaction may still roll back
        raise Abort
    assert stored_files(_isolated_storage) == before
    assert Series.objects.filter(pk=series.pk).exists() and MaskRevision.objects.filter(series=series).count() == 2
    assert not AuditEntry.objects.filter(action="series.delete").exists()


def test_a_failing_receiver_rolls_the_deletion_back(corrected_series, _isolated_storage: Path):
    series = corrected_series["series"]
    before = stored_files(_isolated_storage)

    def refuse(sender: Any, series: Series, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("storage of another app unavailable")

    series_deleting.connect(refuse, dispatch_uid="test.refuse")
    try:
        with pytest.raises(RuntimeError):
            services.delete_series(series, actor=corrected_series["admin"])
    finally:
        series_deleting.disconnect(dispatch_uid="test.refuse")
    assert stored_files(_isolated_storage) == before
    assert all(model.objects.exists() for model in ROWS)


def test_upload_delete_removes_its_series_and_record(corrected_series, client_for, _isolated_storage: Path):
    upload = corrected_series["upload"]
    response = client_for(corrected_series["admin"]).delete(f"/api/uploads/{upload.pk}/?reason=wrong+patient")
    assert response.status_code == 204, response.content
    assert not Upload.objects.exists() and not Series.objects.exists() and not MaskRevision.objects.exists()
    assert stored_files(_isolated_storage) == []
    actions = sorted(AuditEntry.objects.values_list("action", "reason"))
    assert actions == [("series.delete", "wrong patient"), ("upload.delete", "wrong patient")]


def test_django_admin_deletes_series_completely(corrected_series, client, _isolated_storage: Path):
    from accounts.models import User

    superuser = User.objects.create_superuser("root", password="pw-123456")
    client.force_login(superuser)
    series = corrected_series["series"]
    url = f"/admin/imaging/series/{series.pk}/delete/"
    page = client.get(url)
    assert page.status_code == 200 and b"protected" not in page.content.lower() and b'name="reason"' in page.content
    response = client.post(url, {"post": "yes", "reason": "wrong patient in the DICOM header"})
    assert response.status_code == 302, response.content[:2000]
    assert not Series.objects.exists() and not MaskRevision.objects.exists() and not ProposalJob.objects.exists()
    assert stored_files(_isolated_storage) == []
    entry = AuditEntry.objects.get(action="series.delete")
    assert entry.actor == superuser and entry.reason == "wrong patient in the DICOM header"
