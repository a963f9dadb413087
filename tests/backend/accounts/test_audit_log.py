"""Audit entries written by the membership and project APIs and the Django admin, and the read-only
``/api/audit/`` endpoint (project admins see their projects' entries only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from accounts.models import AuditEntry, Membership, Role, User
from imaging.models import Project

pytestmark = pytest.mark.django_db


def only_entry(**filters: Any) -> AuditEntry:
    entries = list(AuditEntry.objects.filter(**filters))
    assert len(entries) == 1, [str(e) for e in AuditEntry.objects.all()]
    return entries[0]


def test_api_deidentification_switched_off_is_recorded(project: Project, make_member: Callable, client_for: Callable) -> None:
    lead = make_member(project, Role.ADMIN, "lead")
    response = client_for(lead).patch(f"/api/projects/{project.pk}/", {"deidentify": False}, format="json")
    assert response.status_code == 200
    entry = only_entry(action="project.update")
    assert (entry.actor_name, entry.project_id, entry.target_id) == ("lead", project.pk, str(project.pk))
    assert entry.before == {"deidentify": True} and entry.after == {"deidentify": False}


def test_api_project_create_and_delete_are_recorded(client_for: Callable) -> None:
    staff = User.objects.create_user("staff", is_staff=True)
    created = client_for(staff).post("/api/projects/", {"name": "fresh"}, format="json").json()
    assert only_entry(action="project.create").after["name"] == "fresh"
    assert only_entry(action="membership.create").after["role"] == Role.ADMIN
    assert client_for(staff).delete(f"/api/projects/{created['id']}/").status_code == 204
    entry = only_entry(action="project.delete")
    assert entry.project_id == created["id"] and entry.before["name"] == "fresh"
    assert "deid_secret" not in json.dumps([e.before or e.after for e in AuditEntry.objects.all()])


def test_api_membership_changes_are_recorded(project: Project, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(project, Role.ADMIN, "lead"))
    newcomer = User.objects.create_user("newcomer")
    created = client.post("/api/memberships/", {"username": "newcomer", "project": project.pk, "role": "annotator"},
                          format="json").json()
    client.patch(f"/api/memberships/{created['id']}/", {"role": "reviewer"}, format="json")
    client.patch(f"/api/memberships/{created['id']}/", {"role": "reviewer"}, format="json")  # no change: no entry
    client.delete(f"/api/memberships/{created['id']}/")
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "before", "after"))
    assert actions == [
        ("membership.create", None, {"user": newcomer.pk, "project": project.pk, "role": "annotator"}),
        ("membership.update", {"role": "annotator"}, {"role": "reviewer"}),
        ("membership.delete", {"user": newcomer.pk, "project": project.pk, "role": "reviewer"}, None),
    ]
    assert set(AuditEntry.objects.values_list("actor_name", "project_id")) == {("lead", project.pk)}


def test_refused_change_leaves_no_entry(project: Project, make_member: Callable, client_for: Callable) -> None:
    reviewer = make_member(project, Role.REVIEWER, "rev")
    assert client_for(reviewer).patch(f"/api/projects/{project.pk}/", {"deidentify": False}, format="json").status_code == 403
    assert not AuditEntry.objects.exists()


@pytest.fixture
def root(client: Any) -> Any:
    client.force_login(User.objects.create_superuser("root", password="pw-123456"))
    return client


def test_admin_project_change_is_recorded(root: Any, project: Project) -> None:
    url = reverse("admin:imaging_project_change", args=[project.pk])
    form = {"name": project.name, "description": "now without de-identification",
            "label_schema": json.dumps(project.label_schema)}  # deidentify unchecked
    assert root.post(url, form).status_code == 302
    entry = only_entry(action="project.update")
    assert entry.actor_name == "root" and entry.project_id == project.pk
    assert entry.before == {"deidentify": True, "description": ""}
    assert entry.after == {"deidentify": False, "description": "now without de-identification"}


def user_form(user: User, **changes: Any) -> dict[str, Any]:
    form = {"username": user.username, "first_name": "", "last_name": "", "email": "", "is_active": "on",
            "date_joined_0": user.date_joined.strftime("%Y-%m-%d"), "date_joined_1": user.date_joined.strftime("%H:%M:%S.%f"),
            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000"}
    form.update(changes)
    return form


def test_admin_user_promotion_and_membership_inline_are_recorded(root: Any, project: Project) -> None:
    user = User.objects.create_user("ann", password="pw-123456")
    form = user_form(user, is_staff="on", **{"memberships-TOTAL_FORMS": "1", "memberships-0-project": str(project.pk),
                                              "memberships-0-role": "admin", "memberships-0-user": str(user.pk)})
    response = root.post(reverse("admin:accounts_user_change", args=[user.pk]), form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    promoted = only_entry(action="user.update")
    assert promoted.before == {"is_staff": False} and promoted.after == {"is_staff": True}
    added = only_entry(action="membership.create")
    assert added.after == {"id": added.after["id"], "user": user.pk, "project": project.pk, "role": "admin",
                           "created_at": added.after["created_at"]}
    assert added.project_id == project.pk
    assert "password" not in json.dumps(list(AuditEntry.objects.values_list("before", "after")))


def test_admin_membership_deletion_is_recorded(root: Any, project: Project, make_member: Callable) -> None:
    make_member(project, Role.ANNOTATOR, "a1")
    make_member(project, Role.REVIEWER, "a2")
    ids = list(Membership.objects.values_list("pk", flat=True))
    response = root.post(reverse("admin:accounts_membership_changelist"),
                         {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.exists()
    deleted = AuditEntry.objects.filter(action="membership.delete")
    assert sorted(int(e.target_id) for e in deleted) == sorted(ids)
    assert {e.before["role"] for e in deleted} == {"annotator", "reviewer"}


@pytest.fixture
def logged(make_member: Callable) -> dict[str, Any]:
    """Entries in two projects, and one without a project."""
    own, other = Project.objects.create(name="own"), Project.objects.create(name="other")
    from accounts import audit

    audit.record(None, "project.update", own, project_id=own.pk, before={"deidentify": True}, after={"deidentify": False})
    audit.record(None, "project.update", other, project_id=other.pk, before={"deidentify": True}, after={"deidentify": False})
    audit.record(None, "user.update", target_type="accounts.user", target_id=1, before={"is_staff": False})
    return {"own": own, "other": other}


@pytest.mark.parametrize("role", [Role.ADMIN, Role.REVIEWER, Role.ML_ENGINEER, Role.ANNOTATOR])
def test_audit_api_shows_only_projects_you_administer(role: str, logged: dict, make_member: Callable,
                                                      client_for: Callable) -> None:
    client = client_for(make_member(logged["own"], role, "caller"))
    listed = client.get("/api/audit/").json()
    filtered_other = client.get(f"/api/audit/?project={logged['other'].pk}").json()
    assert filtered_other["count"] == 0
    if role == Role.ADMIN:
        assert [e["project_id"] for e in listed["results"]] == [logged["own"].pk]
        assert listed["results"][0]["before"] == {"deidentify": True}
        assert client.get(f"/api/audit/?project={logged['own'].pk}").json()["count"] == 1
    else:
        assert listed["count"] == 0


def test_audit_api_is_read_only_and_needs_login(logged: dict, make_member: Callable, client_for: Callable) -> None:
    client = client_for(make_member(logged["own"], Role.ADMIN, "caller"))
    entry = AuditEntry.objects.get(project_id=logged["own"].pk)
    assert client.post("/api/audit/", {"action": "x"}, format="json").status_code == 405
    assert client.patch(f"/api/audit/{entry.pk}/", {"reason": "x"}, format="json").status_code == 405
    assert client.delete(f"/api/audit/{entry.pk}/").status_code == 405
    other = AuditEntry.objects.get(project_id=logged["other"].pk)
    assert client.get(f"/api/audit/{other.pk}/").status_code == 404
    assert client_for(None).get("/api/audit/").status_code == 401
    assert AuditEntry.objects.count() == 3


def test_superuser_sees_every_entry(logged: dict, client_for: Callable) -> None:
    assert client_for(User.objects.create_superuser("root")).get("/api/audit/").json()["count"] == 3
