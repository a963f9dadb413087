"""Workflow defects of issue 20: status follows the live lease; another person's draft is never lost
silently; the same user in two tabs is told so, not "someone else"."""

from __future__ import annotations

import datetime as dt

import numpy as np
from django.test import Client
from django.utils import timezone

import pytest

from accounts.models import Role
from annotation import services
from annotation.models import AnnotationTask, Draft, KeptDraft, MaskRevision, RevisionStatus, TaskStatus
from workflow_helpers import mask_upload, model_labels, xray_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(project, make_member, client_for, django_capture_on_commit_callbacks):
    task, revision = xray_task(project, django_capture_on_commit_callbacks)
    first = make_member(project, Role.ANNOTATOR, "ann")
    second = make_member(project, Role.ANNOTATOR, "bob")
    return task, revision, first, second, client_for(first), client_for(second)


def _status_in_queue(client, task):
    return next(t for t in client.get("/api/annotation/tasks/").json() if t["id"] == task.pk)["status"]


def test_a_task_nobody_holds_is_not_in_progress(setup):
    task, revision, ann, bob, a, b = setup
    assert a.post(f"/api/annotation/tasks/{task.pk}/claim").json()["status"] == TaskStatus.IN_PROGRESS
    assert _status_in_queue(a, task) == TaskStatus.IN_PROGRESS
    # the lease runs out: nobody holds it, it is open again for everyone (API and page)
    AnnotationTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert _status_in_queue(b, task) == TaskStatus.OPEN
    assert b.get(f"/api/annotation/tasks/{task.pk}/").json()["status"] == TaskStatus.OPEN
    page = Client()
    page.force_login(bob)
    row = page.get("/queue/").content.decode().split(f'data-task="{task.pk}"')[1].split("</tr>")[0]
    assert "In progress" not in row and "Open" in row
    # giving the claim up opens it again in the database too
    a.post(f"/api/annotation/tasks/{task.pk}/claim")
    a.post(f"/api/annotation/tasks/{task.pk}/release")
    task.refresh_from_db()
    assert (task.status, task.claimed_by_id) == (TaskStatus.OPEN, None)


def test_someone_elses_draft_is_shown_and_kept_when_saved_over(setup):
    task, revision, ann, bob, a, b = setup
    drawn = model_labels(revision.shape)[None].copy()
    drawn[0, 2:6, 2:6] = 2
    assert a.put(f"/api/annotation/tasks/{task.pk}/draft", **mask_upload(drawn, revision.pk)).status_code == 200
    a.post(f"/api/annotation/tasks/{task.pk}/release")
    queue = {t["id"]: t for t in b.get("/api/annotation/tasks/").json()}
    assert queue[task.pk]["drafts_by"] == ["ann"]
    page = Client()
    page.force_login(bob)
    assert "draft by ann" in page.get("/queue/").content.decode()

    done = b.post(f"/api/annotation/tasks/{task.pk}/accept", {"parent_revision": revision.pk}, format="json")
    assert done.status_code == 201
    accepted = MaskRevision.objects.get(pk=done.json()["revision_id"])
    kept = KeptDraft.objects.get(task=task)
    # the draft became a non-current revision of its author, on the revision it was drawn on
    assert (kept.author, kept.saved_over_by, kept.revision.status) == (ann, bob, RevisionStatus.DRAFT)
    assert kept.revision.parent_id == revision.pk and kept.revision.author == ann
    assert np.array_equal(services.read_labels(kept.revision), drawn[0])
    assert accepted.number == kept.revision.number + 1 and accepted.parent_id == revision.pk
    assert not Draft.objects.filter(task=task).exists()
    # its author is told on their next visit, once
    mine = Client()
    mine.force_login(ann)
    html = mine.get("/queue/").content.decode()
    assert f"was kept as revision {kept.revision.number}" in html and "bob saved over the task" in html
    assert "was kept as revision" not in mine.get("/queue/").content.decode()
    assert a.get("/api/revisions/", {"status": "draft"}).json()["results"][0]["id"] == kept.revision_id


def test_the_kept_draft_is_also_told_on_the_task_page_payload(setup):
    task, revision, ann, bob, a, b = setup
    drawn = model_labels(revision.shape)[None].copy()
    drawn[0, 0:3, 0:3] = 1
    a.put(f"/api/annotation/tasks/{task.pk}/draft", **mask_upload(drawn, revision.pk))
    a.post(f"/api/annotation/tasks/{task.pk}/release")
    b.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(model_labels(revision.shape)[None], revision.pk))
    told = a.get(f"/api/annotation/tasks/{task.pk}/").json()["kept_drafts"]
    assert len(told) == 1 and told[0]["saved_over_by"] == "bob"
    assert a.get(f"/api/annotation/tasks/{task.pk}/").json()["kept_drafts"] == []


def test_the_same_user_in_two_tabs_is_told_it_was_their_other_tab(setup, project, make_member):
    task, revision, ann, bob, a, b = setup
    labels = model_labels(revision.shape)[None]
    first = a.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(labels, revision.pk)).json()
    from annotation.review import services as review_services

    review_services.return_to_annotator(task.pk, make_member(project, Role.REVIEWER, "rev"), first["revision_id"], "again")
    # the second tab still works on the proposal
    stale = a.put(f"/api/annotation/tasks/{task.pk}/draft", **mask_upload(labels, revision.pk))
    body = stale.json()
    assert stale.status_code == 409 and body["saved_by_you"] is True
    assert "You saved this task in another tab or window" in body["detail"] and "Someone" not in body["detail"]
    # someone else's save still says who
    a.post(f"/api/annotation/tasks/{task.pk}/release")
    AnnotationTask.objects.filter(pk=task.pk).update(assignee=None)
    other = b.put(f"/api/annotation/tasks/{task.pk}/draft", **mask_upload(labels, revision.pk)).json()
    assert other["saved_by_you"] is False and "by ann" in other["detail"]
