"""Project and team administration: settings with de-identification confirmation, members and roles,
assignment with priority, leases, the audit log, and the manage.py commands."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEntry, Membership, Role, User
from administration import services
from annotation.models import AnnotationTask, ReviewPolicy
from imaging.models import Project

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin(project, make_member):
    return make_member(project, Role.ADMIN, "boss")


def _settings(project, **changes):
    data = {k: ("" if v is None else v) for k, v in services.settings_of(project).items()}
    data.update(changes, action="settings")
    return {k: v for k, v in data.items() if v is not False}  # unchecked boxes are not sent


def test_settings_page_changes_settings_asks_to_confirm_deidentification_and_audits(project, admin, make_member):
    page = _client(admin)
    assert page.get(f"/manage/{project.pk}/").status_code == 200
    saved = page.post(f"/manage/{project.pk}/", _settings(project, review_fraction=0.25, modality="ct"), follow=True)
    assert saved.status_code == 200 and "Saved" in saved.content.decode()
    assert ReviewPolicy.objects.get(project=project).review_fraction == 0.25
    assert services.profile_for(project).modality == "ct"
    entry = AuditEntry.objects.get(action="project.update")
    assert entry.before == {"modality": "mixed", "review_fraction": 1.0} and entry.after == {"modality": "ct", "review_fraction": 0.25}
    # switching de-identification off needs the confirmation box
    data = _settings(project, deidentify=False)
    data.pop("deidentify", None)
    refused = page.post(f"/manage/{project.pk}/", data)
    assert refused.status_code == 400 and "confirm" in refused.content.decode()
    project.refresh_from_db()
    assert project.deidentify is True
    data["confirm_deidentify"] = "on"
    page.post(f"/manage/{project.pk}/", data)
    project.refresh_from_db()
    assert project.deidentify is False
    assert AuditEntry.objects.filter(action="project.update", after={"deidentify": False}).exists()
    # a bad value is refused with a message, nothing stored
    bad = page.post(f"/manage/{project.pk}/", _settings(project, double_read_fraction=2))
    assert bad.status_code == 400 and ReviewPolicy.objects.get(project=project).double_read_fraction == 0.0


def test_members_roles_and_removal_are_audited_and_the_last_admin_stays(project, admin, make_member):
    make_member(project, Role.ANNOTATOR, "ann")
    User.objects.create_user("newbie")
    page = _client(admin)
    page.post(f"/manage/{project.pk}/", {"action": "member", "username": "newbie", "role": "annotator"})
    page.post(f"/manage/{project.pk}/", {"action": "member", "username": "newbie", "role": "reviewer"})
    assert Membership.objects.get(user__username="newbie").role == "reviewer"
    assert page.post(f"/manage/{project.pk}/", {"action": "member", "username": "ghost", "role": "annotator"}).status_code == 400
    actions = list(AuditEntry.objects.filter(project_id=project.pk).order_by("id").values_list("action", "before", "after"))
    assert actions == [("membership.create", None, {"user": "newbie", "role": "annotator"}),
                       ("membership.update", {"user": "newbie", "role": "annotator"}, {"user": "newbie", "role": "reviewer"})]
    with pytest.raises(services.AdministrationError, match="at least one admin"):
        services.set_member(admin, project, admin, Role.ANNOTATOR)
    newbie = User.objects.get(username="newbie")
    page.post(f"/manage/{project.pk}/", {"action": "remove", "user": str(newbie.pk)})
    assert not Membership.objects.filter(user=newbie).exists()
    assert AuditEntry.objects.filter(action="membership.delete", before={"user": "newbie", "role": "reviewer"}).exists()
    html = page.get(f"/manage/{project.pk}/").content.decode()
    assert "membership.delete" in html and "newbie" in html  # the audit log is visible to the admin


def test_only_admins_manage_and_non_members_get_404(project, other_project, admin, make_member):
    reviewer = make_member(project, Role.REVIEWER, "rev")
    outsider = make_member(other_project, Role.ADMIN, "outsider")
    assert _client(reviewer).get(f"/manage/{project.pk}/").status_code == 403
    assert _client(reviewer).post(f"/manage/{project.pk}/", {"action": "member", "username": "rev", "role": "admin"}).status_code == 403
    assert _client(outsider).get(f"/manage/{project.pk}/").status_code == 404
    assert Client().get(f"/manage/{project.pk}/").status_code == 302
    assert _client(admin).get("/manage/new/").status_code == 403  # project admins are not site staff
    with pytest.raises(services.NotAllowedError):
        services.update_project(reviewer, project, {"review_fraction": 0.1})


def test_staff_create_projects_and_become_their_admin(db):
    staff = User.objects.create_user("site", is_staff=True)
    response = _client(staff).post("/manage/new/", {"name": "lungs-2027", "modality": "ct", "deidentify": "on",
                                                    "review_fraction": "0.5", "double_read_fraction": "0.1",
                                                    "agreement_threshold": "0.85"})
    project = Project.objects.get(name="lungs-2027")
    assert response.status_code == 302 and response["Location"] == f"/manage/{project.pk}/"
    assert Membership.objects.get(project=project, user=staff).role == Role.ADMIN
    assert ReviewPolicy.objects.get(project=project).double_read_fraction == 0.1
    assert AuditEntry.objects.filter(action="project.create", project_id=project.pk).exists()
    again = _client(staff).post("/manage/new/", {"name": "lungs-2027", "modality": "ct", "review_fraction": "1",
                                                 "double_read_fraction": "0", "agreement_threshold": "0.9"})
    assert again.status_code == 400 and "exists already" in again.content.decode()


def test_assign_with_priority_and_release_stale_leases(project, admin, make_member, django_capture_on_commit_callbacks):
    from workflow_helpers import xray_task

    ann = make_member(project, Role.ANNOTATOR, "ann")
    low, _ = xray_task(project, django_capture_on_commit_callbacks, seed=1)
    high, _ = xray_task(project, django_capture_on_commit_callbacks, seed=2)
    page = _client(admin)
    assert page.post(f"/manage/{project.pk}/", {"action": "assign", "tasks": f"{high.pk}", "assignee": "ann",
                                                "priority": "5"}).status_code == 302
    high.refresh_from_db()
    assert (high.assignee, high.priority) == (ann, 5)
    from annotation import workflow

    assert [i.task.pk for i in workflow.queue_for(ann)][0] == high.pk  # priority first
    assert page.post(f"/manage/{project.pk}/", {"action": "assign", "tasks": "x", "priority": "0"}).status_code == 400
    workflow.claim(low.pk, ann)
    AnnotationTask.objects.filter(pk=low.pk).update(lease_expires_at=timezone.now() - dt.timedelta(minutes=5))
    html = page.get(f"/manage/{project.pk}/").content.decode()
    assert "stale" in html
    page.post(f"/manage/{project.pk}/", {"action": "release", "task": str(low.pk)})
    low.refresh_from_db()
    assert (low.claimed_by, low.status) == (None, "open")
    assert AuditEntry.objects.filter(action="task.release_lease", before__claimed_by="ann").exists()
    assert AuditEntry.objects.filter(action="task.assign", after__priority=5).exists()


def test_commands_set_a_site_up_from_a_script(db, monkeypatch):
    call_command("create_project", "screening", "--modality", "cxr", "--review-fraction", "0.2")
    monkeypatch.setenv("NEW_PW", "s3cret-pass-123")
    call_command("add_member", "alice", "--project", "screening", "--role", "admin", "--create", "--password-env", "NEW_PW")
    call_command("add_member", "bob", "--project", "screening", "--role", "annotator", "--create")
    call_command("add_member", "bob", "--project", "screening", "--role", "reviewer")
    project = Project.objects.get(name="screening")
    assert dict(Membership.objects.filter(project=project).values_list("user__username", "role")) == {
        "alice": "admin", "bob": "reviewer"}
    assert User.objects.get(username="alice").check_password("s3cret-pass-123")
    assert not User.objects.get(username="bob").has_usable_password()
    assert ReviewPolicy.objects.get(project=project).review_fraction == 0.2
    with pytest.raises(CommandError, match="no user named"):
        call_command("add_member", "carol", "--project", "screening", "--role", "annotator")
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_project", "screening")
    with pytest.raises(CommandError, match="no project"):
        call_command("add_member", "alice", "--project", "nope", "--role", "admin")
