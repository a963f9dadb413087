"""Review pages: the queue lists tasks in review for reviewers only; the review page is for reviewers."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Role
from workflow_helpers import mask_upload, model_labels, xray_task

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_review_queue_and_page_are_for_the_projects_reviewers(project, other_project, make_member, client_for,
                                                              django_capture_on_commit_callbacks, settings):
    task, proposal = xray_task(project, django_capture_on_commit_callbacks)
    annotator = make_member(project, Role.ANNOTATOR, "ann")
    reviewer = make_member(project, Role.REVIEWER, "rev")
    stranger = make_member(other_project, Role.REVIEWER, "stranger")
    labels = model_labels(proposal.shape)[None].copy()
    labels[0, 1:3, 1:3] = 1
    client_for(annotator).post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(labels, proposal.pk))

    page = _client(reviewer).get("/review/").content.decode()
    assert f'data-task="{task.pk}"' in page and "ann" in page and f"/review/tasks/{task.pk}/" in page
    assert f'data-task="{task.pk}"' not in _client(annotator).get("/review/").content.decode()
    assert f'data-task="{task.pk}"' not in _client(stranger).get("/review/").content.decode()
    assert _client(annotator).get(f"/review/tasks/{task.pk}/").status_code == 403
    assert _client(stranger).get(f"/review/tasks/{task.pk}/").status_code == 404
    assert Client().get("/review/").status_code == 302  # to the login page
    opened = _client(reviewer).get(f"/review/tasks/{task.pk}/")
    assert opened.status_code in (200, 503)  # 503 only where the viewer bundle is not built
    if opened.status_code == 200:
        assert b"mountReviewPage" in opened.content
