"""Role × endpoint × own/other project, plus anonymous: nobody reaches another project's data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import Membership, Role, User
from backend_factories import make_dicom
from imaging.models import Instance, Patient, Project, Series, Study, Upload
from imaging.services import ingest
from imaging.sources import SourceFile

pytestmark = pytest.mark.django_db

ROLES = [Role.ANNOTATOR, Role.REVIEWER, Role.ML_ENGINEER, Role.ADMIN]
SIDES = ["own", "other"]
MODELS = {
    "projects": Project, "patients": Patient, "studies": Study, "series": Series,
    "instances": Instance, "uploads": Upload, "memberships": Membership,
}


@pytest.fixture
def world(make_member: Callable) -> dict[str, Project]:
    own, other = Project.objects.create(name="own"), Project.objects.create(name="other")
    ingest(own, [SourceFile("a.dcm", make_dicom(study_uid="1.7", series_uid="1.7.1"))])
    ingest(other, [SourceFile("b.dcm", make_dicom(patient_id="B-PAT", study_uid="1.8", series_uid="1.8.1"))])
    make_member(own, Role.ANNOTATOR, "own-colleague")
    make_member(other, Role.ADMIN, "other-admin")
    return {"own": own, "other": other}


def object_of(resource: str, project: Project) -> Any:
    model = MODELS[resource]
    return project if model is Project else model.objects.filter(project=project).first()


def wado_url(instance: Instance) -> str:
    return (f"/wado?requestType=WADO&studyUID={instance.series.study.study_instance_uid}"
            f"&seriesUID={instance.series.series_instance_uid}&objectUID={instance.sop_instance_uid}"
            "&contentType=application/dicom")


@pytest.fixture
def as_role(world: dict[str, Project], make_member: Callable, client_for: Callable) -> Callable[[str], Any]:
    def _client(role: str) -> Any:
        return client_for(make_member(world["own"], role, f"user-{role}"))
    return _client


@pytest.mark.parametrize("resource", list(MODELS))
@pytest.mark.parametrize("role", ROLES)
def test_list_shows_only_own_project(role: str, resource: str, world: dict, as_role: Callable) -> None:
    response = as_role(role).get(f"/api/{resource}/")
    assert response.status_code == 200
    ids = {row["id"] for row in response.json()["results"]}
    assert object_of(resource, world["own"]).pk in ids
    assert object_of(resource, world["other"]).pk not in ids


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("resource", list(MODELS))
@pytest.mark.parametrize("role", ROLES)
def test_detail(role: str, resource: str, side: str, world: dict, as_role: Callable) -> None:
    obj = object_of(resource, world[side])
    response = as_role(role).get(f"/api/{resource}/{obj.pk}/")
    assert response.status_code == (200 if side == "own" else 404)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_wado(role: str, side: str, world: dict, as_role: Callable) -> None:
    instance = Instance.objects.get(project=world[side])
    response = as_role(role).get(wado_url(instance))
    if side == "own":
        assert response.status_code == 200
        assert response["Content-Type"] == "application/dicom"
        assert b"".join(response.streaming_content)[128:132] == b"DICM"
    else:
        assert response.status_code == 404


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_upload(role: str, side: str, world: dict, as_role: Callable) -> None:
    data = make_dicom(patient_id="NEW-PAT", study_uid="1.9", series_uid="1.9.1")
    response = as_role(role).post(
        "/api/uploads/", {"project": world[side].pk, "files": [SimpleUploadedFile("n.dcm", data)]}, format="multipart"
    )
    if side == "other":
        assert response.status_code == 400
        assert response.json()["project"] == [f"invalid project {world[side].pk}: no such project among yours"]
    else:
        assert response.status_code == (403 if role == Role.ANNOTATOR else 201)
    assert Series.objects.filter(project=world["other"]).count() == 1


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_project_update(role: str, side: str, world: dict, as_role: Callable) -> None:
    response = as_role(role).patch(f"/api/projects/{world[side].pk}/", {"description": "changed"}, format="json")
    expected = 404 if side == "other" else (200 if role == Role.ADMIN else 403)
    assert response.status_code == expected
    world[side].refresh_from_db()
    assert (world[side].description == "changed") == (expected == 200)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_series_delete(role: str, side: str, world: dict, as_role: Callable) -> None:
    series = Series.objects.get(project=world[side])
    response = as_role(role).delete(f"/api/series/{series.pk}/")
    expected = 404 if side == "other" else (204 if role == Role.ADMIN else 403)
    assert response.status_code == expected
    assert Series.objects.filter(pk=series.pk).exists() == (expected != 204)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("role", ROLES)
def test_membership_create(role: str, side: str, world: dict, as_role: Callable) -> None:
    User.objects.create_user("newcomer")
    client = as_role(role)
    response = client.post("/api/memberships/", {"username": "newcomer", "project": world[side].pk, "role": "annotator"}, format="json")
    assert response.status_code == (201 if side == "own" and role == Role.ADMIN else 403)


@pytest.mark.parametrize("role", ROLES)
def test_non_admin_cannot_change_own_role(role: str, world: dict, as_role: Callable) -> None:
    client = as_role(role)
    membership = Membership.objects.get(user__username=f"user-{role}")
    response = client.patch(f"/api/memberships/{membership.pk}/", {"role": "admin"}, format="json")
    assert response.status_code == (200 if role == Role.ADMIN else 403)


@pytest.mark.parametrize(
    "method,url",
    [("get", f"/api/{resource}/") for resource in MODELS]
    + [("get", "/wado?requestType=WADO&studyUID=1&seriesUID=2&objectUID=3"), ("post", "/api/uploads/"),
       ("get", "/api/me/"), ("post", "/api/projects/")],
)
def test_anonymous_is_rejected(method: str, url: str, world: dict, client_for: Callable) -> None:
    response = getattr(client_for(None), method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize("resource", list(MODELS))
def test_user_without_membership_sees_nothing(resource: str, world: dict, client_for: Callable) -> None:
    client = client_for(User.objects.create_user("loner"))
    assert client.get(f"/api/{resource}/").json()["count"] == 0
    assert client.get(f"/api/{resource}/{object_of(resource, world['own']).pk}/").status_code == 404


def test_only_staff_create_projects(world: dict, client_for: Callable, make_member: Callable) -> None:
    admin = make_member(world["own"], Role.ADMIN, "plain-admin")
    assert client_for(admin).post("/api/projects/", {"name": "new"}, format="json").status_code == 403
    staff = User.objects.create_user("staff", is_staff=True)
    response = client_for(staff).post("/api/projects/", {"name": "new"}, format="json")
    assert response.status_code == 201 and response.json()["my_role"] == "admin"
