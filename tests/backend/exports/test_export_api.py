"""Export jobs through the API: progress, ranged downloads, bad input, permissions, project isolation."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from django.core.files.storage import default_storage

from accounts.models import Membership, Role
from annotation.models import RevisionStatus
from exports.models import ExportJob, ExportStatus
from export_helpers import add_ct, add_xray

pytestmark = pytest.mark.django_db


def _post(client: Any, capture: Any, fmt: str, project: Any, **selection: Any) -> Any:
    with capture(execute=True):  # the job is queued on commit and runs eagerly
        return client.post("/api/exports/", {"format": fmt, "selection": {"kind": "filter", "project_id": project.pk,
                                                                          **selection}}, format="json")


def _stored_archives() -> list[str]:
    if not default_storage.exists("exports"):
        return []
    return [f"{d}/{f}" for d in default_storage.listdir("exports")[0] for f in default_storage.listdir(f"exports/{d}")[1]]


def test_export_job_runs_reports_progress_and_downloads_by_ranges(project, make_member, client_for,
                                                                  django_capture_on_commit_callbacks):
    revisions = [add_xray(project, django_capture_on_commit_callbacks, seed=i) for i in range(3)]
    client = client_for(make_member(project, Role.ML_ENGINEER))
    response = _post(client, django_capture_on_commit_callbacks, "png", project, modality="xray")
    assert response.status_code == 202, response.content
    assert response.json()["progress_total"] == 3
    job = client.get(f"/api/exports/{response.json()['id']}/").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["progress_done"] == 3
    assert job["case_count"] == 3 and len(job["dataset_hash"]) == 64
    whole = client.get(job["download_url"])
    body = b"".join(whole.streaming_content)
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes" and len(body) == job["archive_size"]
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert {f"labels/xr_{r.instance_id:06d}.png" for r in revisions} <= set(names)
    part = client.get(job["download_url"], HTTP_RANGE="bytes=10-99")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 10-99/{len(body)}"
    assert b"".join(part.streaming_content) == body[10:100]
    tail = client.get(job["download_url"], HTTP_RANGE="bytes=-16")
    assert tail.status_code == 206 and b"".join(tail.streaming_content) == body[-16:]
    beyond = client.get(job["download_url"], HTTP_RANGE=f"bytes={len(body)}-")
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(body)}"


def test_same_selection_twice_gives_the_same_dataset_hash(project, make_member, client_for,
                                                          django_capture_on_commit_callbacks):
    for i in range(2):
        add_xray(project, django_capture_on_commit_callbacks, seed=i)
    client = client_for(make_member(project, Role.ADMIN))
    first = _post(client, django_capture_on_commit_callbacks, "coco", project).json()["id"]
    second = _post(client, django_capture_on_commit_callbacks, "coco", project).json()["id"]
    hashes = {ExportJob.objects.get(pk=pk).dataset_hash for pk in (first, second)}
    assert len(hashes) == 1 and "" not in hashes


@pytest.mark.parametrize("fmt,selection,status,message", [
    ("tiff", {}, 400, "unknown export format 'tiff'"),
    ("png", {"modality": "CR"}, 400, "matches no case"),
    ("png", {}, 400, "png is a 2D format for X-rays"),
    ("coco", {"modality": "CT"}, 400, "coco is a 2D format"),
    ("nnunet", {}, 400, "mixes modalities"),
    ("monai", {}, 400, "mixes modalities"),
    ("nifti", {"kind": "dataset_version", "id": 3}, 400, "unknown selection kind 'dataset_version'"),
    ("nifti", {"revisions": "best"}, 400, "selection.revisions must be one of curated, latest"),
    ("nifti", {"date_from": "2026-13-01"}, 400, "selection.date_from must be a date"),
])
def test_bad_requests_get_a_clear_4xx_and_store_nothing(project, make_member, client_for,
                                                       django_capture_on_commit_callbacks, fmt, selection, status, message):
    add_xray(project, django_capture_on_commit_callbacks)
    add_ct(project, django_capture_on_commit_callbacks, depth=3, size=16)
    client = client_for(make_member(project, Role.ML_ENGINEER))
    response = _post(client, django_capture_on_commit_callbacks, fmt, project, **selection)
    assert response.status_code == status and message in response.json()["detail"], response.json()
    assert not ExportJob.objects.exists() and _stored_archives() == []


def test_only_ml_engineers_and_admins_export(project, make_member, client_for, django_capture_on_commit_callbacks):
    add_xray(project, django_capture_on_commit_callbacks)
    for role in (Role.ANNOTATOR, Role.REVIEWER):
        response = _post(client_for(make_member(project, role)), django_capture_on_commit_callbacks, "png", project)
        assert response.status_code == 403 and "ML engineers and project admins" in response.json()["detail"]
    assert client_for(None).get("/api/exports/").status_code == 401
    assert not ExportJob.objects.exists()


def test_revoked_permission_fails_the_job_and_blocks_the_download(project, make_member, client_for,
                                                                   django_capture_on_commit_callbacks):
    add_xray(project, django_capture_on_commit_callbacks)
    engineer = make_member(project, Role.ML_ENGINEER)
    client = client_for(engineer)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # queued, not yet run
        response = client.post("/api/exports/", {"format": "png", "selection": {"project_id": project.pk}}, format="json")
    assert response.status_code == 202
    Membership.objects.filter(user=engineer, project=project).update(role=Role.ANNOTATOR)
    for callback in callbacks:
        callback()
    job = ExportJob.objects.get(pk=response.json()["id"])
    assert job.status == ExportStatus.FAILED and "ML engineers and project admins" in job.error
    assert not job.archive and _stored_archives() == []
    denied = client.get(f"/api/exports/{job.pk}/download/")
    assert denied.status_code == 403 and "ML engineers and project admins" in denied.json()["detail"]
    Membership.objects.filter(user=engineer, project=project).delete()
    assert client.get(f"/api/exports/{job.pk}/").status_code == 404  # no longer a member: not even its existence


def test_exports_never_include_another_projects_cases(project, other_project, make_member, client_for,
                                                      django_capture_on_commit_callbacks):
    ours = add_xray(project, django_capture_on_commit_callbacks, seed=1)
    theirs = add_xray(other_project, django_capture_on_commit_callbacks, seed=2)
    engineer = make_member(project, Role.ML_ENGINEER)
    client = client_for(engineer)
    response = _post(client, django_capture_on_commit_callbacks, "png", project, revisions="latest")
    job = ExportJob.objects.get(pk=response.json()["id"])
    with default_storage.open(job.archive.name, "rb") as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    cases = json.loads(archive.read("manifest.json"))["cases"]
    assert [c["label"]["revision_id"] for c in cases] == [ours.pk]
    assert not any(str(theirs.instance_id) in n for n in archive.namelist() if n.startswith("images/"))
    # asking for the other project is refused, and its jobs stay invisible
    refused = _post(client, django_capture_on_commit_callbacks, "png", other_project)
    assert refused.status_code == 403
    other_job = ExportJob.objects.create(project=other_project, format="png", selection={})
    assert client.get(f"/api/exports/{other_job.pk}/").status_code == 404
    assert [j["id"] for j in client.get("/api/exports/").json()["results"]] == [job.pk]


def test_curated_selection_takes_the_latest_curated_revision_and_skips_rejected(
        project, make_member, client_for, django_capture_on_commit_callbacks):
    from annotation.services import create_revision, read_labels

    submitted = add_xray(project, django_capture_on_commit_callbacks, seed=1)
    draft = create_revision(series=submitted.series, instance=submitted.instance, labels=read_labels(submitted) * 0,
                            source="person", status=RevisionStatus.DRAFT)
    add_xray(project, django_capture_on_commit_callbacks, seed=2, status=RevisionStatus.PROPOSED)
    rejected = add_xray(project, django_capture_on_commit_callbacks, seed=3)
    create_revision(series=rejected.series, instance=rejected.instance, labels=read_labels(rejected),
                    source="person", status=RevisionStatus.REJECTED)
    client = client_for(make_member(project, Role.ML_ENGINEER))

    def exported(mode: str) -> list[int]:
        job = ExportJob.objects.get(pk=_post(client, django_capture_on_commit_callbacks, "png", project,
                                             revisions=mode).json()["id"])
        with default_storage.open(job.archive.name, "rb") as handle:
            data = json.loads(zipfile.ZipFile(io.BytesIO(handle.read())).read("manifest.json"))
        return sorted(c["label"]["revision_id"] for c in data["cases"])

    assert exported("curated") == [submitted.pk]
    latest = exported("latest")
    assert draft.pk in latest and submitted.pk not in latest and len(latest) == 2


def test_the_exports_page_is_for_ml_engineers(project, make_member, client):
    engineer = make_member(project, Role.ML_ENGINEER)
    client.force_login(engineer)
    page = client.get("/exports/")
    assert page.status_code == 200 and b'id="export-form"' in page.content and project.name.encode() in page.content
    client.force_login(make_member(project, Role.ANNOTATOR))
    denied = client.get("/exports/")
    assert denied.status_code == 403 and b"ML engineers and project admins" in denied.content
