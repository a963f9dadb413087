"""Review stage: routing of closed tasks, approve / return with comment / edit and approve, curated state, queue order."""

from __future__ import annotations

import numpy as np
import pytest

from accounts.models import AuditEntry, Role
from annotation import services
from annotation.models import AnnotationTask, EditMeasure, MaskRevision, ReviewDecision, RevisionStatus, TaskStatus
from annotation.review import routing
from annotation.review.models import ReviewPolicy
from annotation.signals import revision_curated
from workflow_helpers import mask_upload, model_labels, xray_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(project, make_member, client_for):
    annotator = make_member(project, Role.ANNOTATOR, "ann")
    reviewer = make_member(project, Role.REVIEWER, "rev")
    return annotator, reviewer, client_for(annotator), client_for(reviewer)


def _submit(client, task, parent, labels):
    response = client.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(labels, parent))
    assert response.status_code == 201, response.content
    return MaskRevision.objects.get(pk=response.json()["revision_id"])


def _edited(revision, rows=slice(2, 6), cols=slice(2, 6)):
    labels = model_labels(revision.shape)[None].copy()
    labels[0, rows, cols] = 2
    return labels


def test_submit_return_with_comment_fix_resubmit_approve_makes_it_curated(project, people, django_capture_on_commit_callbacks):
    annotator, reviewer, ann, rev = people
    task, proposal = xray_task(project, django_capture_on_commit_callbacks)
    first = _submit(ann, task, proposal.pk, _edited(proposal))
    task.refresh_from_db()
    assert task.status == TaskStatus.IN_REVIEW and first.status == RevisionStatus.SUBMITTED
    # read-only for the annotator until it is returned
    refused = ann.put(f"/api/annotation/tasks/{task.pk}/draft", **mask_upload(_edited(proposal), first.pk))
    assert refused.status_code == 403 and "in review" in refused.json()["detail"]
    assert task.pk not in [t["id"] for t in ann.get("/api/annotation/tasks/").json()]
    # the edit measure: 16 pixels changed from right lung / background to left lung
    measure = EditMeasure.objects.get(revision=first)
    assert measure.proposal_id == proposal.pk and measure.added + measure.relabelled == 16 and measure.removed == 0
    assert rev.get("/api/review/queue/").json()[0]["id"] == task.pk
    # a return needs a comment
    assert rev.post(f"/api/review/tasks/{task.pk}/return", {"revision": first.pk}, format="json").status_code == 400
    returned = rev.post(f"/api/review/tasks/{task.pk}/return",
                        {"revision": first.pk, "comment": "Left base is missing"}, format="json")
    assert returned.status_code == 201 and returned.json()["task_status"] == TaskStatus.RETURNED
    task.refresh_from_db()
    first.refresh_from_db()
    assert (task.status, task.assignee_id, first.status) == (TaskStatus.RETURNED, annotator.pk, RevisionStatus.RETURNED)
    payload = ann.get(f"/api/annotation/tasks/{task.pk}/").json()
    assert payload["returned"]["comment"] == "Left base is missing" and payload["returned"]["reviewer"] == "rev"
    assert task.pk in [t["id"] for t in ann.get("/api/annotation/tasks/").json()]
    # fix and resubmit on top of the returned revision
    second = _submit(ann, task, first.pk, _edited(proposal, rows=slice(2, 8)))
    assert ann.get(f"/api/annotation/tasks/{task.pk}/").json()["returned"] is None
    assert rev.post(f"/api/review/tasks/{task.pk}/approve", {"revision": first.pk}, format="json").status_code == 409
    announced: list[int] = []

    def _listener(sender, revision, **kwargs):
        announced.append(revision.pk)

    revision_curated.connect(_listener, dispatch_uid="test-review-curated")
    try:
        approved = rev.post(f"/api/review/tasks/{task.pk}/approve", {"revision": second.pk}, format="json")
    finally:
        revision_curated.disconnect(dispatch_uid="test-review-curated")
    assert approved.status_code == 201 and approved.json()["curated_revision"] == second.pk
    assert announced == [second.pk]  # downstream (retraining's label trigger) hears of the approval
    task.refresh_from_db()
    second.refresh_from_db()
    assert task.status == TaskStatus.DONE and second.status == RevisionStatus.APPROVED
    curated = ann.get("/api/revisions/", {"curated": "true"}).json()
    rows = curated["results"] if isinstance(curated, dict) else curated
    assert [r["id"] for r in rows] == [second.pk] and rows[0]["curated"] is True
    assert list(services.curated_revisions(project, "cxr")) == [second]
    assert list(services.curated_revisions(project, "ct")) == []
    assert [d.kind for d in ReviewDecision.objects.filter(task=task)] == ["return", "approve"]
    # done: nothing more to decide
    assert rev.post(f"/api/review/tasks/{task.pk}/approve", {"revision": second.pk}, format="json").status_code == 409


def test_accept_is_stored_as_accepted_and_edit_and_approve_curates_the_reviewers_revision(
        project, people, django_capture_on_commit_callbacks):
    annotator, reviewer, ann, rev = people
    task, proposal = xray_task(project, django_capture_on_commit_callbacks)
    done = ann.post(f"/api/annotation/tasks/{task.pk}/accept", {"parent_revision": proposal.pk}, format="json")
    accepted = MaskRevision.objects.get(pk=done.json()["revision_id"])
    assert accepted.status == RevisionStatus.ACCEPTED
    assert [r["id"] for r in ann.get("/api/revisions/", {"status": "accepted"}).json()["results"]] == [accepted.pk]
    # an annotator cannot review
    assert ann.post(f"/api/review/tasks/{task.pk}/approve", {"revision": accepted.pk}, format="json").status_code == 403
    labels = _edited(proposal)
    edited = rev.post(f"/api/review/tasks/{task.pk}/edit-approve", **mask_upload(labels, accepted.pk))
    assert edited.status_code == 201, edited.content
    mine = MaskRevision.objects.get(pk=edited.json()["curated_revision"])
    assert (mine.author, mine.status, mine.parent_id, mine.method) == (reviewer, RevisionStatus.APPROVED, accepted.pk, "review")
    assert np.array_equal(services.read_labels(mine), labels[0])
    assert list(services.curated_revisions(project)) == [mine]
    accepted.refresh_from_db()
    assert accepted.status == RevisionStatus.ACCEPTED  # judged, superseded by the reviewer's revision


def test_difference_marks_added_and_removed_pixels(project, people, django_capture_on_commit_callbacks):
    annotator, reviewer, ann, rev = people
    task, proposal = xray_task(project, django_capture_on_commit_callbacks)
    labels = model_labels(proposal.shape)[None].copy()
    h, w = proposal.shape
    labels[0, 0:2, 0:3] = 1  # 6 pixels added
    labels[0, h // 4, w // 8: w // 8 + 5] = 0  # 5 pixels removed
    _submit(ann, task, proposal.pk, labels)
    got = rev.get(f"/api/review/tasks/{task.pk}/difference")
    diff = np.frombuffer(got.content, np.uint8).reshape([int(n) for n in got["X-Shape"].split(",")])
    assert (np.count_nonzero(diff == 1), np.count_nonzero(diff == 2)) == (6, 5)
    body = rev.get(f"/api/review/tasks/{task.pk}/").json()
    assert body["measure"]["added"] == 6 and body["measure"]["removed"] == 5
    assert body["proposal"]["id"] == proposal.pk and body["final"]["status"] == "submitted"
    assert [e["what"] for e in body["history"]] == ["submit"]


def test_sampling_and_auto_approve_follow_the_project_policy(project, people, django_capture_on_commit_callbacks):
    annotator, reviewer, ann, rev = people
    ReviewPolicy.objects.create(project=project, review_fraction=0.0, auto_approve_confidence=0.7)
    # 3 mm pixels: the synthetic lungs get a plausible area, so QC raises no flag on this proposal
    confident, p1 = xray_task(project, django_capture_on_commit_callbacks, confidence=0.9, seed=1, spacing=(3.0, 3.0))
    doubtful, p2 = xray_task(project, django_capture_on_commit_callbacks, confidence=0.5, seed=2)
    edited, p3 = xray_task(project, django_capture_on_commit_callbacks, confidence=0.95, seed=3)
    from quality.models import QCSummary

    assert not QCSummary.objects.filter(revision=p1, flagged_count__gt=0).exists()
    ann.post(f"/api/annotation/tasks/{confident.pk}/accept", {"parent_revision": p1.pk}, format="json")
    ann.post(f"/api/annotation/tasks/{doubtful.pk}/accept", {"parent_revision": p2.pk}, format="json")
    _submit(ann, edited, p3.pk, _edited(p3))
    kinds = dict(ReviewDecision.objects.values_list("task_id", "kind"))
    # confident + unchanged + no flag: auto-approved; the others are sampled out (fraction 0)
    assert kinds == {confident.pk: "auto_approve", doubtful.pk: "sampled_out", edited.pk: "sampled_out"}
    assert set(AnnotationTask.objects.values_list("status", flat=True)) == {TaskStatus.DONE}
    assert services.curated_revisions(project).count() == 3
    # sampling is a stable fraction of tasks
    tasks = [AnnotationTask(pk=i, project_id=project.pk) for i in range(1, 2001)]
    share = sum(routing.in_review_sample(t, 0.25) for t in tasks) / len(tasks)
    assert 0.22 < share < 0.28
    assert all(routing.in_review_sample(t, 1.0) for t in tasks) and not any(routing.in_review_sample(t, 0.0) for t in tasks)


def test_review_queue_orders_by_flags_then_by_distance_from_the_proposal(project, people, django_capture_on_commit_callbacks):
    annotator, reviewer, ann, rev = people
    small, p1 = xray_task(project, django_capture_on_commit_callbacks, seed=1)
    large, p2 = xray_task(project, django_capture_on_commit_callbacks, seed=2)
    flagged, p3 = xray_task(project, django_capture_on_commit_callbacks, seed=3)
    _submit(ann, small, p1.pk, _edited(p1, rows=slice(2, 4), cols=slice(2, 4)))
    _submit(ann, large, p2.pk, _edited(p2, rows=slice(2, 12), cols=slice(2, 12)))
    no_left = model_labels(p3.shape)[None].copy()
    no_left[no_left == 2] = 0  # a whole lung removed: QC raises empty_side and side_ratio
    _submit(ann, flagged, p3.pk, no_left)
    rows = rev.get("/api/review/queue/").json()
    assert [r["id"] for r in rows] == [flagged.pk, large.pk, small.pk]
    assert "empty_side" in rows[0]["flags"] and rows[1]["dice"] < rows[2]["dice"]


def test_review_policy_read_by_members_changed_by_admins_with_an_audit_record(project, people, make_member, client_for):
    annotator, reviewer, ann, rev = people
    admin = client_for(make_member(project, Role.ADMIN, "boss"))
    assert ann.get(f"/api/review/policies/{project.pk}/").json()["review_fraction"] == 1.0
    assert rev.put(f"/api/review/policies/{project.pk}/", {"review_fraction": 0.5}, format="json").status_code == 403
    bad = admin.patch(f"/api/review/policies/{project.pk}/", {"review_fraction": 1.5}, format="json")
    assert bad.status_code == 400 and "review_fraction" in bad.json()
    ok = admin.patch(f"/api/review/policies/{project.pk}/", {"review_fraction": 0.5}, format="json")
    assert ok.status_code == 200 and ok.json()["review_fraction"] == 0.5
    entry = AuditEntry.objects.get(action="project.review_policy.update")
    assert (entry.actor_name, entry.before, entry.after, entry.project_id) == (
        "boss", {"review_fraction": 1.0}, {"review_fraction": 0.5}, project.pk)
