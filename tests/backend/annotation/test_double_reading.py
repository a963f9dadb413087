"""Double reading: a sampled task is read by two annotators who cannot see each other's mask; agreement
(per lung Dice, HD95) when both are in; pairs below the project's threshold are adjudicated (curated)."""

from __future__ import annotations

import pytest

from accounts.models import Role
from annotation import services, workflow
from annotation.models import (AnnotationTask, DoubleRead, DoubleReadStatus, ReviewDecision, ReviewPolicy, RevisionStatus,
                               TaskStatus)
from quality import dashboard
from target_factories import make_target, proposal_labels, upload, with_extra_left

pytestmark = pytest.mark.django_db


@pytest.fixture
def readers(project, make_member, client_for):
    ReviewPolicy.objects.create(project=project, double_read_fraction=1.0, agreement_threshold=0.99)
    people = {name: make_member(project, role, name) for name, role in
              (("ann1", Role.ANNOTATOR), ("ann2", Role.ANNOTATOR), ("rev", Role.REVIEWER))}
    return people, {name: client_for(user) for name, user in people.items()}


def test_second_reader_is_blinded_and_a_disagreeing_pair_is_adjudicated(project, readers):
    people, clients = readers
    task, proposal = make_target(project, 1, None, 0.9)
    first = workflow.submit(task.pk, people["ann1"], proposal.pk, upload(with_extra_left(20)[None], 30)).revision
    task.refresh_from_db()
    pair = DoubleRead.objects.get(task=task)
    assert (task.status, pair.status, pair.first_revision_id) == (TaskStatus.OPEN, DoubleReadStatus.AWAITING_SECOND, first.pk)
    # the first reader cannot read it again; the second starts from the proposal and cannot see the first reading
    assert task.pk not in [t["id"] for t in clients["ann1"].get("/api/annotation/tasks/").json()]
    refused = clients["ann1"].post(f"/api/annotation/tasks/{task.pk}/claim")
    assert refused.status_code == 403 and "independently" in refused.json()["detail"]
    assert task.pk in [t["id"] for t in clients["ann2"].get("/api/annotation/tasks/").json()]
    assert clients["ann2"].get(f"/api/annotation/tasks/{task.pk}/").json()["revision"]["id"] == proposal.pk
    assert first.pk not in [r["id"] for r in clients["ann2"].get("/api/revisions/").json()["results"]]
    assert clients["ann2"].get(f"/api/annotation/revisions/{first.pk}/mask").status_code == 404
    assert clients["ann2"].get(f"/api/revisions/{first.pk}/").status_code == 404

    # the second reading: the proposal unchanged; left lung Dice 400/420, right 1 → mean below 0.99
    second = workflow.accept(task.pk, people["ann2"], proposal.pk, 12).revision
    pair.refresh_from_db()
    task.refresh_from_db()
    assert pair.status == DoubleReadStatus.ADJUDICATION and task.status == TaskStatus.IN_REVIEW
    assert (pair.dice_right, round(pair.dice_left, 6), round(pair.dice, 6)) == (1.0, round(400 / 420, 6),
                                                                                  round((1 + 400 / 420) / 2, 6))
    assert pair.hd95_right == 0.0 and pair.hd95_left > 0 and pair.hd95_unit == "mm"
    body = clients["rev"].get(f"/api/review/tasks/{task.pk}/").json()
    assert body["double_read"]["first"]["id"] == first.pk and body["double_read"]["second"]["id"] == second.pk
    assert clients["rev"].post(f"/api/review/tasks/{task.pk}/return", {"revision": second.pk, "comment": "x"},
                               format="json").status_code == 409
    assert clients["rev"].post(f"/api/review/tasks/{task.pk}/adjudicate", {"revision": proposal.pk},
                               format="json").status_code == 400
    assert clients["ann1"].post(f"/api/review/tasks/{task.pk}/adjudicate", {"revision": first.pk},
                                format="json").status_code == 403
    done = clients["rev"].post(f"/api/review/tasks/{task.pk}/adjudicate", {"revision": first.pk}, format="json")
    assert done.status_code == 201 and done.json()["curated_revision"] == first.pk
    pair.refresh_from_db()
    first.refresh_from_db()
    assert pair.status == DoubleReadStatus.ADJUDICATED and first.status == RevisionStatus.APPROVED
    assert list(services.curated_revisions(project)) == [first]
    assert ReviewDecision.objects.get(task=task).kind == "adjudicate"
    figure = {f.name: f for f in dashboard.figures(dashboard.DashboardFilter(project.pk), ["agreement"])}["agreement"]
    assert {r[0]: r[1:] for r in figure.rows}["0.95-0.98"] == [1, 1]


def test_an_agreeing_pair_goes_on_as_a_single_reading(project, readers):
    people, clients = readers
    ReviewPolicy.objects.filter(project=project).update(agreement_threshold=0.9)
    task, proposal = make_target(project, 1, None, 0.9)
    workflow.accept(task.pk, people["ann1"], proposal.pk, 5)
    second = workflow.submit(task.pk, people["ann2"], proposal.pk, upload(proposal_labels()[None], 5)).revision
    pair = DoubleRead.objects.get(task=task)
    assert pair.status == DoubleReadStatus.AGREED and pair.dice == 1.0
    assert AnnotationTask.objects.get(pk=task.pk).status == TaskStatus.IN_REVIEW  # the review fraction is 1
    approved = clients["rev"].post(f"/api/review/tasks/{task.pk}/approve", {"revision": second.pk}, format="json")
    assert approved.status_code == 201 and approved.json()["decision"] == "approve"
    assert clients["rev"].get(f"/api/review/tasks/{task.pk}/").json()["double_read"] is None
