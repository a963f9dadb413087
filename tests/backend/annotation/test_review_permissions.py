"""Role × endpoint for the endpoints of issue 20 (review, review policy, dashboard, curated filter):
reviewer, project admin, annotator of the project, annotator of another project, anonymous. Nobody
outside the project learns whether its objects exist (404, like an id that does not exist)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from accounts.models import Role
from annotation import workflow
from target_factories import make_target, proposal_labels, upload

pytestmark = pytest.mark.django_db

ACTORS = ["reviewer", "admin", "annotator", "other_annotator", "anonymous"]
ANON = (401, 403)


@pytest.fixture
def world(project, other_project, make_member: Callable, client_for: Callable) -> dict[str, Any]:
    task, proposal = make_target(project, 1, None, 0.9)
    annotator = make_member(project, Role.ANNOTATOR, "ann")
    final = workflow.submit(task.pk, annotator, proposal.pk, upload(proposal_labels()[None], 30)).revision
    clients = {
        "reviewer": client_for(make_member(project, Role.REVIEWER, "rev")),
        "admin": client_for(make_member(project, Role.ADMIN, "boss")),
        "annotator": client_for(annotator),
        "other_annotator": client_for(make_member(other_project, Role.ANNOTATOR, "stranger")),
        "anonymous": client_for(None),
    }
    return {"task": task, "final": final, "project": project, "clients": clients}


def _call(world: dict[str, Any], actor: str, method: str, url: str, **kwargs: Any) -> Any:
    client = world["clients"][actor]
    return getattr(client, method)(url.format(task=world["task"].pk, project=world["project"].pk,
                                              revision=world["final"].pk), **kwargs)


REVIEW_ONLY = {"reviewer": (200, 201), "admin": (200, 201), "annotator": (403,), "other_annotator": (404,), "anonymous": ANON}
DASHBOARD = {"reviewer": (200,), "admin": (200,), "annotator": (403,), "other_annotator": (404,), "anonymous": ANON}
MEMBERS_READ = {"reviewer": (200,), "admin": (200,), "annotator": (200,), "other_annotator": (404,), "anonymous": ANON}
ADMIN_WRITE = {"reviewer": (403,), "admin": (200,), "annotator": (403,), "other_annotator": (404,), "anonymous": ANON}

ENDPOINTS: dict[str, tuple[str, str, dict[str, Any], dict[str, tuple[int, ...]]]] = {
    "review task": ("get", "/api/review/tasks/{task}/", {}, REVIEW_ONLY),
    "difference": ("get", "/api/review/tasks/{task}/difference", {}, REVIEW_ONLY),
    "approve": ("post", "/api/review/tasks/{task}/approve", {"data": {"revision": "{revision}"}, "format": "json"}, REVIEW_ONLY),
    "return": ("post", "/api/review/tasks/{task}/return",
               {"data": {"revision": "{revision}", "comment": "fix"}, "format": "json"}, REVIEW_ONLY),
    "policy read": ("get", "/api/review/policies/{project}/", {}, MEMBERS_READ),
    "policy write": ("patch", "/api/review/policies/{project}/", {"data": {"review_fraction": 0.5}, "format": "json"},
                     ADMIN_WRITE),
    "dashboard": ("get", "/api/quality/dashboard/{project}/", {}, DASHBOARD),
    "dashboard csv": ("get", "/api/quality/dashboard/{project}/outcomes.csv", {}, DASHBOARD),
}


def _fill(value: Any, world: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return world["final"].pk if value == "{revision}" else value


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_role_by_endpoint(endpoint: str, actor: str, world: dict[str, Any]) -> None:
    method, url, kwargs, expected = ENDPOINTS[endpoint]
    response = _call(world, actor, method, url, **_fill(kwargs, world))
    assert response.status_code in expected[actor], (endpoint, actor, response.status_code, response.content[:200])


@pytest.mark.parametrize("actor", ["reviewer", "annotator", "other_annotator"])
def test_edit_approve_by_role(actor: str, world: dict[str, Any]) -> None:
    from workflow_helpers import mask_upload

    response = _call(world, actor, "post", "/api/review/tasks/{task}/edit-approve",
                     **mask_upload(proposal_labels()[None], world["final"].pk))
    assert response.status_code == {"reviewer": 201, "annotator": 403, "other_annotator": 404}[actor]


def test_another_projects_task_is_indistinguishable_from_a_missing_one(world: dict[str, Any]) -> None:
    stranger = world["clients"]["other_annotator"]
    missing = stranger.get("/api/review/tasks/999999/")
    hidden = stranger.get(f"/api/review/tasks/{world['task'].pk}/")
    assert (missing.status_code, missing.json()) == (hidden.status_code, hidden.json())


@pytest.mark.parametrize("actor", ["reviewer", "annotator", "other_annotator"])
def test_queue_and_curated_filter_show_only_the_callers_projects(actor: str, world: dict[str, Any]) -> None:
    queue = _call(world, actor, "get", "/api/review/queue/")
    assert queue.status_code == 200
    assert [t["id"] for t in queue.json()] == ([world["task"].pk] if actor == "reviewer" else [])
    world["clients"]["reviewer"].post(f"/api/review/tasks/{world['task'].pk}/approve",
                                      {"revision": world["final"].pk}, format="json")
    curated = _call(world, actor, "get", "/api/revisions/?curated=true").json()["results"]
    assert [r["id"] for r in curated] == ([] if actor == "other_annotator" else [world["final"].pk])
    assert world["clients"]["anonymous"].get("/api/review/queue/").status_code in ANON
