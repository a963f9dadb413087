"""Membership API: adding members reveals nothing about other projects or users; changes touch only the role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from accounts.models import Membership, Role, User
from imaging.models import Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_member: Callable) -> dict[str, Any]:
    own, other = Project.objects.create(name="own"), Project.objects.create(name="other")
    make_member(other, Role.ANNOTATOR, "other-member")
    User.objects.create_user("lonely")  # exists, member of nothing
    return {"own": own, "other": other, "missing_id": other.pk + 1000}


def probe_bodies(world: dict[str, Any]) -> list[dict[str, Any]]:
    """Requests whose honest answers would tell existing projects, users and members apart."""
    bodies = []
    for project in (world["other"].pk, world["missing_id"]):
        for username in ("other-member", "lonely", "nobody-has-this-name"):
            bodies.append({"username": username, "project": project, "role": "annotator"})
    bodies.append({"username": "other-member", "project": world["other"].pk, "role": "not-a-role"})
    return bodies


@pytest.mark.parametrize("role", [Role.ADMIN, Role.REVIEWER, Role.ANNOTATOR])
def test_adding_to_a_project_you_do_not_administer_always_answers_the_same(
    role: str, world: dict, make_member: Callable, client_for: Callable
) -> None:
    client = client_for(make_member(world["own"], role, "caller"))
    answers = set()
    for body in probe_bodies(world):
        response = client.post("/api/memberships/", body, format="json")
        answers.add((response.status_code, response.content))
    assert answers == {(403, b'{"detail":"only admins of that project can add members to it"}')}
    assert Membership.objects.filter(project=world["other"]).count() == 1


def test_non_admin_of_own_project_gets_the_same_answer(world: dict, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(world["own"], Role.REVIEWER, "caller"))
    mine = client.post("/api/memberships/", {"username": "lonely", "project": world["own"].pk, "role": "annotator"},
                       format="json")
    theirs = client.post("/api/memberships/", {"username": "lonely", "project": world["other"].pk, "role": "annotator"},
                         format="json")
    assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content)


def test_admin_adds_member_to_own_project(world: dict, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(world["own"], Role.ADMIN, "caller"))
    response = client.post("/api/memberships/", {"username": "lonely", "project": world["own"].pk, "role": "reviewer"},
                           format="json")
    assert response.status_code == 201, response.content
    assert Membership.objects.get(user__username="lonely").role == Role.REVIEWER
    again = client.post("/api/memberships/", {"username": "lonely", "project": world["own"].pk, "role": "annotator"},
                        format="json")
    assert again.status_code == 400


def test_change_touches_only_the_role(world: dict, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(world["own"], Role.ADMIN, "caller"))
    member = make_member(world["own"], Role.ANNOTATOR, "colleague")
    membership = Membership.objects.get(user=member)
    response = client.patch(f"/api/memberships/{membership.pk}/",
                            {"role": "reviewer", "project": world["other"].pk, "username": "lonely"}, format="json")
    assert response.status_code == 200, response.content
    membership.refresh_from_db()
    assert (membership.project_id, membership.user_id, membership.role) == (world["own"].pk, member.pk, Role.REVIEWER)


def test_other_projects_memberships_are_not_found(world: dict, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(world["own"], Role.ADMIN, "caller"))
    theirs = Membership.objects.get(user__username="other-member")
    missing = theirs.pk + 1000
    for method in ("get", "patch", "delete"):
        existing = getattr(client, method)(f"/api/memberships/{theirs.pk}/", {"role": "admin"}, format="json")
        absent = getattr(client, method)(f"/api/memberships/{missing}/", {"role": "admin"}, format="json")
        assert existing.status_code == absent.status_code == 404
        assert existing.content == absent.content
    assert Membership.objects.filter(pk=theirs.pk, role=Role.ANNOTATOR).exists()
