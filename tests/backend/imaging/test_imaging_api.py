"""API surface: schema and docs, token and session auth, pagination, filters, WADO parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Role
from backend_factories import make_dicom, make_png
from imaging.models import Instance, Project
from imaging.services import ingest
from imaging.sources import SourceFile

pytestmark = pytest.mark.django_db


@pytest.fixture
def filled(project: Project) -> Project:
    ingest(project, [SourceFile("a.dcm", make_dicom())])
    for value in range(3):
        ingest(project, [SourceFile(f"x{value}.png", make_png(value=value))])
    return project


def test_openapi_schema_and_docs(client: Any) -> None:
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/uploads/", "/api/series/", "/api/instances/", "/wado", "/api/projects/"):
        assert f"{path}:" in text
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_api_docs_load_their_assets_from_this_site_not_a_cdn(client: Any) -> None:
    """Sites without internet still get working API docs: every script and style is ours."""
    import re

    from django.contrib.staticfiles import finders

    html = client.get("/api/docs/").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert any("swagger-ui-bundle" in asset for asset in assets), assets
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset} is fetched from another site"
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not among the static files"


def test_token_auth_for_scripts(filled: Project, make_member: Callable) -> None:
    make_member(filled, Role.REVIEWER, "scripter")
    client = APIClient()
    token = client.post("/api/auth/token/", {"username": "scripter", "password": "pw-123456"}, format="json").json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/series/").json()["count"] == 4
    assert client.get("/api/me/").json()["memberships"] == [{"project": filled.pk, "role": "reviewer"}]


def test_session_auth_for_browser(filled: Project, make_member: Callable) -> None:
    make_member(filled, Role.ANNOTATOR, "browser")
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="browser", password="pw-123456")
    assert client.get("/api/projects/").status_code == 200
    assert client.get("/api/").status_code == 200


def test_pagination_and_filters(filled: Project, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(filled, Role.ANNOTATOR))
    page = client.get("/api/series/?page_size=2").json()
    assert page["count"] == 4 and set(page) >= {"next", "previous", "results"}
    assert client.get("/api/series/?modality=CT").json()["count"] == 1
    assert client.get("/api/series/?modality=DX&source_format=image").json()["count"] == 3
    series = client.get("/api/series/?modality=CT").json()["results"][0]
    assert client.get(f"/api/instances/?series={series['id']}").json()["count"] == 1
    assert client.get(f"/api/patients/?project={filled.pk}").json()["count"] == 4
    assert client.get(f"/api/series/?project={filled.pk + 999}").status_code == 400


@pytest.mark.parametrize(
    "query,status",
    [
        ("requestType=WADO&studyUID=1&seriesUID=2", 400),
        ("requestType=WADX&studyUID=1&seriesUID=2&objectUID=3", 400),
        ("requestType=WADO&studyUID=1&seriesUID=2&objectUID=3&contentType=image/jpeg", 406),
        ("requestType=WADO&studyUID=1&seriesUID=2&objectUID=3", 404),
    ],
)
def test_wado_parameter_errors(query: str, status: int, filled: Project, make_member: Callable, client_for: Callable) -> None:
    response = client_for(make_member(filled, Role.ANNOTATOR)).get(f"/wado?{query}", HTTP_ACCEPT="application/dicom")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


@pytest.mark.parametrize("accept", ["*/*", "application/dicom", "application/dicom; transfer-syntax=*", "image/jpeg"])
def test_wado_returns_the_stored_bytes(accept: str, filled: Project, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(filled, Role.ANNOTATOR))
    instance = Instance.objects.filter(series__modality="CT").get()
    url = client.get(f"/api/instances/{instance.pk}/").json()["wado_url"]
    response = client.get(url, HTTP_ACCEPT=accept)
    assert response.status_code == 200 and response["Content-Type"] == "application/dicom"
    assert b"".join(response.streaming_content) == instance.file.open("rb").read()


def test_wado_answers_304_to_a_browser_that_has_the_instance(filled: Project, other_project: Project,
                                                              make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(filled, Role.ANNOTATOR))
    instance = Instance.objects.filter(series__modality="CT").get()
    url = client.get(f"/api/instances/{instance.pk}/").json()["wado_url"]
    first = client.get(url)
    etag = first["ETag"]
    assert etag == f'"{instance.sha256}"' and first["Cache-Control"].startswith("private, max-age=")
    again = client.get(url, HTTP_IF_NONE_MATCH=f'"other", W/{etag}')
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert client.get(url, HTTP_IF_NONE_MATCH='"other"').status_code == 200
    # the tag is no key: outside the instance's projects the answer stays 404
    outsider = client_for(make_member(other_project, Role.ANNOTATOR, "outsider"))
    assert outsider.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 404


def test_upload_without_files_is_a_clear_error(filled: Project, make_member: Callable, client_for: Callable) -> None:
    response = client_for(make_member(filled, Role.ADMIN)).post("/api/uploads/", {"project": filled.pk}, format="multipart")
    assert response.status_code == 400 and response.json()["code"] == "no_files"


def test_openapi_schema_generates_without_warnings() -> None:
    """Enum-name collisions and duplicate operation ids make generated clients unstable."""
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert "ModelModalityEnum" in schema["components"]["schemas"]
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache, (
        GENERATOR_STATS._warn_cache, GENERATOR_STATS._error_cache)


def test_api_root_lists_every_part_of_the_api(project: Project, make_member: Callable, client_for: Callable) -> None:
    listed = client_for(make_member(project, Role.ANNOTATOR, "rooted")).get("/api/").json()
    for name, path in {"series": "/api/series/", "models": "/api/models/", "proposals": "/api/proposals/",
                       "revisions": "/api/revisions/", "qc": "/api/qc/", "annotation/tasks": "/api/annotation/tasks/",
                       "docs": "/api/docs/"}.items():
        assert listed[name].endswith(path), (name, listed.get(name))
