"""Annotator workflow API: tasks opened by proposals, claims with a lease, drafts, submit/409, accept, reject, permissions."""

from __future__ import annotations

import datetime as dt
import gzip

import numpy as np
import pytest
from django.utils import timezone

from accounts.models import Role
from annotation import services, workflow
from annotation.review import services as review_services
from annotation.models import AnnotationTask, Draft, MaskRevision, RevisionStatus, TaskAction, TaskStatus
from workflow_helpers import mask_upload, model_labels, xray_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(project, make_member, client_for, django_capture_on_commit_callbacks):
    task, revision = xray_task(project, django_capture_on_commit_callbacks)
    annotator = make_member(project, Role.ANNOTATOR, "ann")
    return task, revision, annotator, client_for(annotator)


def test_a_model_proposal_opens_one_task_and_the_payload_follows_the_contract(setup):
    task, revision, annotator, client = setup
    assert task.status == TaskStatus.OPEN and task.instance_id == revision.instance_id
    body = client.get(f"/api/annotation/tasks/{task.pk}/").json()
    h, w = revision.shape
    assert body["shape"] == [1, h, w] and body["revision"]["id"] == revision.pk and body["draft"] is None
    assert body["instances"][0]["url"].startswith("/wado?requestType=WADO")
    assert [r["code"] for r in body["reject_reasons"]] == ["unreadable", "not_chest", "wrong_modality", "other"]
    assert body["series_warnings"] == []
    # a second proposal of the same target reuses the task; the reader's warnings reach the annotator
    warning = "1 missing slice(s) between 10.0 and 20.0 mm: filled by interpolation"
    services.create_revision(series=task.series, instance=task.instance, labels=model_labels((h, w)),
                             source="model", status=RevisionStatus.PROPOSED, geometry={"warnings": [warning]})
    assert AnnotationTask.objects.filter(target_key=task.target_key).count() == 1
    assert client.get(f"/api/annotation/tasks/{task.pk}/").json()["series_warnings"] == [warning]


def test_claim_holds_a_lease_that_blocks_others_until_it_expires(setup, project, make_member, client_for):
    task, revision, annotator, client = setup
    other = client_for(make_member(project, Role.ANNOTATOR, "ann2"))
    claimed = client.post(f"/api/annotation/tasks/{task.pk}/claim").json()
    assert claimed["claimed_by"] == "ann" and claimed["lease_expires_at"] and claimed["status"] == TaskStatus.IN_PROGRESS
    refused = other.post(f"/api/annotation/tasks/{task.pk}/claim")
    assert refused.status_code == 423 and "ann is working on this task" in refused.json()["detail"]
    assert other.put(f"/api/annotation/tasks/{task.pk}/draft",
                     **mask_upload(model_labels(revision.shape)[None], revision.pk)).status_code == 423
    assert task.pk not in [t["id"] for t in other.get("/api/annotation/tasks/").json()]
    AnnotationTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert other.post(f"/api/annotation/tasks/{task.pk}/claim").json()["claimed_by"] == "ann2"


def test_draft_round_trip_then_submit_creates_a_child_revision_and_moves_to_review(setup):
    task, revision, annotator, client = setup
    labels = model_labels(revision.shape)[None].copy()
    assert client.get(f"/api/annotation/tasks/{task.pk}/draft").status_code == 404
    labels[0, 2:6, 2:6] = 2
    saved = client.put(f"/api/annotation/tasks/{task.pk}/draft", **mask_upload(labels, revision.pk))
    assert saved.status_code == 200 and saved.json()["revision_id"] is None
    got = client.get(f"/api/annotation/tasks/{task.pk}/draft", HTTP_ACCEPT_ENCODING="identity")
    assert got["X-Shape"] == f"1,{revision.shape[0]},{revision.shape[1]}"
    assert np.array_equal(np.frombuffer(got.content, np.uint8).reshape(labels.shape), labels)
    assert client.get(f"/api/annotation/tasks/{task.pk}/").json()["draft"]["parent_revision"] == revision.pk

    done = client.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(labels, revision.pk, **{"X-Time-Spent": "42.5"}))
    assert done.status_code == 201
    new = MaskRevision.objects.get(pk=done.json()["revision_id"])
    assert (new.parent_id, new.author, new.status, new.source) == (revision.pk, annotator, RevisionStatus.SUBMITTED, "person")
    diff = services.read_labels(new) != services.read_labels(revision)
    assert diff.sum() == 16 and diff[2:6, 2:6].all()
    action = TaskAction.objects.get(revision=new)
    assert (action.kind, action.time_spent_s) == ("submit", 42.5)
    task.refresh_from_db()
    assert (task.status, task.claimed_by_id, task.time_spent_s) == (TaskStatus.IN_REVIEW, None, 42.5)
    assert not Draft.objects.filter(task=task).exists()


def test_a_stale_parent_gets_409_with_the_current_revision(setup, project, make_member):
    task, revision, annotator, client = setup
    labels = model_labels(revision.shape)[None]
    first = client.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(labels, revision.pk)).json()
    # submitted tasks are read-only until a reviewer returns them
    review_services.return_to_annotator(task.pk, make_member(project, Role.REVIEWER, "rev"), first["revision_id"], "redo")
    stale = client.put(f"/api/annotation/tasks/{task.pk}/draft", **mask_upload(labels, revision.pk))
    assert stale.status_code == 409
    # the same user (another tab): the message says so rather than "someone"
    assert stale.json()["current_revision"] == first["revision_id"] and "another tab" in stale.json()["detail"]
    again = client.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(labels, revision.pk))
    assert again.status_code == 409
    kept = client.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(labels, first["revision_id"]))
    assert kept.status_code == 201
    assert MaskRevision.objects.get(pk=kept.json()["revision_id"]).parent_id == first["revision_id"]


def test_accept_copies_the_mask_and_reject_needs_a_reason(setup, project, make_member, client_for, django_capture_on_commit_callbacks):
    task, revision, annotator, client = setup
    accepted = client.post(f"/api/annotation/tasks/{task.pk}/accept", {"parent_revision": revision.pk, "time_spent": 3},
                           format="json")
    assert accepted.status_code == 201
    copy = MaskRevision.objects.get(pk=accepted.json()["revision_id"])
    assert copy.checksum == revision.checksum and copy.parent_id == revision.pk and copy.method == "accepted"

    task2, revision2 = xray_task(project, django_capture_on_commit_callbacks, seed=1)
    url = f"/api/annotation/tasks/{task2.pk}/reject"
    assert client.post(url, {"parent_revision": revision2.pk, "reason": "bored"}, format="json").status_code == 400
    missing = client.post(url, {"parent_revision": revision2.pk, "reason": "other", "text": " "}, format="json")
    assert missing.status_code == 400 and "why" in missing.json()["detail"]
    rejected = client.post(url, {"parent_revision": revision2.pk, "reason": "other", "text": "lateral view"}, format="json")
    assert rejected.status_code == 201
    rev = MaskRevision.objects.get(pk=rejected.json()["revision_id"])
    assert rev.status == RevisionStatus.REJECTED and rev.author == annotator and "lateral view" in rev.note
    assert TaskAction.objects.get(revision=rev).reason == "other"
    assert AnnotationTask.objects.get(pk=task2.pk).status == TaskStatus.IN_REVIEW


def test_uploads_are_checked(setup):
    task, revision, annotator, client = setup
    h, w = revision.shape
    url = f"/api/annotation/tasks/{task.pk}/draft"
    wrong_shape = client.put(url, **mask_upload(np.zeros((1, h, w - 1), np.uint8), revision.pk))
    assert wrong_shape.status_code == 400 and "does not match" in wrong_shape.json()["detail"]
    bad_values = client.put(url, **mask_upload(np.full((1, h, w), 3, np.uint8), revision.pk))
    assert bad_values.status_code == 400 and "values" in bad_values.json()["detail"]
    kwargs = mask_upload(np.zeros((1, h, w), np.uint8), revision.pk)
    kwargs["data"] = kwargs["data"][:-8]
    assert client.put(url, **kwargs).status_code == 400
    rle = {**mask_upload(np.zeros((1, h, w), np.uint8), revision.pk)}
    rle["headers"] = {k: v for k, v in rle["headers"].items() if k != "Content-Encoding"}
    n = h * w  # one run of zeros, LEB128 length
    varint = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        varint.append(byte | (0x80 if n else 0))
        if not n:
            break
    rle["data"] = bytes([0]) + bytes(varint)
    rle["headers"]["X-Mask-Encoding"] = "rle-v1"
    assert client.put(url, **rle).status_code == 200


def test_only_members_with_an_editing_role_see_or_change_tasks(setup, other_project, project, make_member, client_for):
    task, revision, annotator, client = setup
    outsider = client_for(make_member(other_project, Role.ANNOTATOR, "outsider"))
    assert outsider.get(f"/api/annotation/tasks/{task.pk}/").status_code == 404
    assert outsider.post(f"/api/annotation/tasks/{task.pk}/claim").status_code == 404
    assert outsider.get("/api/annotation/tasks/").json() == []
    ml = client_for(make_member(project, Role.ML_ENGINEER, "ml"))
    assert ml.get(f"/api/annotation/tasks/{task.pk}/").status_code == 200
    refused = ml.post(f"/api/annotation/tasks/{task.pk}/accept", {"parent_revision": revision.pk}, format="json")
    assert refused.status_code == 403 and "role" in refused.json()["detail"]
    assert client_for(None).get(f"/api/annotation/tasks/{task.pk}/").status_code in (401, 403)


def test_queue_puts_flagged_then_least_confident_first(project, make_member, client_for, django_capture_on_commit_callbacks):
    from quality.models import QCFlag, QCSummary

    confident, rev1 = xray_task(project, django_capture_on_commit_callbacks, confidence=0.95, seed=1)
    unsure, rev2 = xray_task(project, django_capture_on_commit_callbacks, confidence=0.40, seed=2)
    middle, rev = xray_task(project, django_capture_on_commit_callbacks, confidence=0.70, seed=3)
    QCFlag.objects.all().delete()  # the real QC's flags on these synthetic masks are replaced by controlled ones
    QCSummary.objects.all().delete()
    for r in (rev1, rev2, rev):
        QCSummary.objects.create(revision=r, modality="CR", flagged_count=int(r == rev), priority=0.0,
                                 confidence=r.confidence)
    QCFlag.objects.create(revision=rev, name="synthetic_check", flagged=True, value=1.0)
    user = make_member(project, Role.ANNOTATOR, "q")
    rows = client_for(user).get("/api/annotation/tasks/").json()
    ids = [r["id"] for r in rows]
    assert ids.index(middle.pk) < ids.index(unsure.pk) < ids.index(confident.pk)
    assert "synthetic_check" in rows[ids.index(middle.pk)]["flags"]


def test_ct_upload_of_some_slices_keeps_the_others_from_the_parent(project, make_member, client_for):
    from imaging.models import Instance, Patient, Series, Study

    study = Study.objects.create(project=project, patient=Patient.objects.create(project=project, pseudonym="p"),
                                 study_instance_uid="1.2.3")
    series = Series.objects.create(project=project, study=study, series_instance_uid="1.2.3.4", modality="CT",
                                   rows=4, columns=5, num_instances=3)
    for z in range(3):
        Instance.objects.create(project=project, series=series, sop_instance_uid=f"1.2.3.4.{z}", sop_class_uid="1.2",
                                slice_location=float(z), file_size=1, sha256="0" * 64, image_position=[0, 0, z])
    parent_labels = np.zeros((3, 4, 5), np.uint8)
    parent_labels[:, 1:3, 1:2] = 1
    parent = services.create_revision(series=series, instance=None, labels=parent_labels, source="model",
                                      status=RevisionStatus.PROPOSED)
    task = AnnotationTask.objects.get(target_key=parent.target_key)
    client = client_for(make_member(project, Role.ANNOTATOR, "ct"))
    assert client.get(f"/api/annotation/tasks/{task.pk}/").json()["shape"] == [3, 4, 5]
    slice1 = np.full((1, 4, 5), 2, np.uint8)
    kwargs = mask_upload(slice1, parent.pk, **{"X-Slices": "1"})
    kwargs["headers"]["X-Shape"] = "3,4,5"
    assert client.put(f"/api/annotation/tasks/{task.pk}/draft", **kwargs).status_code == 200
    assert client.get(f"/api/annotation/tasks/{task.pk}/").json()["draft"]["slices"] == [1]
    # slices sent unchanged are not listed as changed; slices not sent stay the parent's
    both = mask_upload(np.stack([parent_labels[2], slice1[0]]), parent.pk, **{"X-Slices": "2,1"})
    both["headers"]["X-Shape"] = "3,4,5"
    assert client.put(f"/api/annotation/tasks/{task.pk}/draft", **both).status_code == 200
    assert client.get(f"/api/annotation/tasks/{task.pk}/").json()["draft"]["slices"] == [1]
    assert np.array_equal(workflow.draft_labels(Draft.objects.get(task=task))[[0, 2]], parent_labels[[0, 2]])
    bad = {**kwargs, "headers": {**kwargs["headers"], "X-Slices": "1,1"}}
    assert client.put(f"/api/annotation/tasks/{task.pk}/draft", **bad).status_code == 400
    done = client.post(f"/api/annotation/tasks/{task.pk}/submit", **kwargs).json()
    stored = services.read_labels(MaskRevision.objects.get(pk=done["revision_id"]))
    expected = parent_labels.copy()
    expected[1] = 2
    assert np.array_equal(stored, expected)


def test_backfill_creates_missing_tasks(setup):
    task, revision, annotator, client = setup
    AnnotationTask.objects.all().delete()
    assert workflow.backfill_tasks() == 1
    assert AnnotationTask.objects.get().target_key == revision.target_key


def test_session_clients_with_csrf_can_upload_masks(setup):
    """The browser's way: session cookie + X-CSRFToken on a gzip octet-stream POST (Django's CSRF check reads POST)."""
    from django.test import Client

    task, revision, annotator, _ = setup
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    client.get(f"/tasks/{task.pk}/")  # the viewer page sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    kwargs = mask_upload(model_labels(revision.shape)[None], revision.pk)
    refused = client.post(f"/api/annotation/tasks/{task.pk}/submit", **kwargs)
    assert refused.status_code == 403
    kwargs["headers"]["X-CSRFToken"] = token
    assert client.put(f"/api/annotation/tasks/{task.pk}/draft", **kwargs).status_code == 200
    assert client.post(f"/api/annotation/tasks/{task.pk}/submit", **kwargs).status_code == 201


def test_release_with_the_page_s_session_and_csrf_is_idempotent_and_spares_other_claims(setup, project, make_member,
                                                                                        client_for):
    """Leaving the viewer page posts ``release`` (keepalive fetch: session cookie + X-CSRFToken, no body)."""
    from django.test import Client

    task, revision, annotator, _ = setup
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    client.get(f"/tasks/{task.pk}/")
    headers = {"X-CSRFToken": client.cookies["csrftoken"].value}
    assert client.post(f"/api/annotation/tasks/{task.pk}/claim", headers=headers).status_code == 200
    assert client.post(f"/api/annotation/tasks/{task.pk}/release").status_code == 403  # no token: refused
    for _ in range(2):
        assert client.post(f"/api/annotation/tasks/{task.pk}/release", headers=headers).status_code == 204
    assert AnnotationTask.objects.get(pk=task.pk).claimed_by is None
    other = client_for(make_member(project, Role.ANNOTATOR, "ann2"))
    assert other.post(f"/api/annotation/tasks/{task.pk}/claim").json()["claimed_by"] == "ann2"
    assert client.post(f"/api/annotation/tasks/{task.pk}/release", headers=headers).status_code == 204
    assert AnnotationTask.objects.get(pk=task.pk).claimed_by.username == "ann2"  # not the caller's claim: kept


def test_the_payload_tells_the_last_outcome_with_its_author_and_reason(setup):
    task, revision, annotator, client = setup
    assert client.get(f"/api/annotation/tasks/{task.pk}/").json()["revision"]["action"] is None  # a model proposal
    rejected = client.post(f"/api/annotation/tasks/{task.pk}/reject",
                           {"parent_revision": revision.pk, "reason": "other", "text": "lateral view"}, format="json")
    assert rejected.json()["revision_number"] == revision.number + 1
    body = client.get(f"/api/annotation/tasks/{task.pk}/").json()
    assert body["status"] == TaskStatus.IN_REVIEW
    assert {k: body["revision"][k] for k in ("id", "number", "author", "action", "reason", "reason_text")} == {
        "id": rejected.json()["revision_id"], "number": revision.number + 1, "author": "ann", "action": "reject",
        "reason": "Other", "reason_text": "lateral view"}


def test_revision_volumes_are_decoded_once_and_handed_out_read_only(setup):
    task, revision, annotator, client = setup
    first = workflow.revision_volume(revision)
    again = workflow.revision_volume(MaskRevision.objects.get(pk=revision.pk))
    assert np.shares_memory(first, again) and first.shape == (1, *revision.shape)
    assert np.array_equal(first[0], services.read_labels(revision))
    with pytest.raises(ValueError):
        first[0, 0, 0] = 2  # a cached parent must never be changed in place by a caller


def test_claim_answers_the_payload_in_few_queries(setup, django_assert_max_num_queries):
    task, revision, annotator, client = setup
    # task x2, savepoint pair, role, claim UPDATE, double-reading check (claim and payload), revision
    # with author and action, draft, kept-draft notice
    with django_assert_max_num_queries(11):
        body = client.post(f"/api/annotation/tasks/{task.pk}/claim").json()
    assert body["claimed_by"] == "ann" and body["revision"]["action"] is None and body["lease_expires_at"]


def test_the_revision_mask_is_revalidated_by_its_checksum_per_encoding(setup):
    task, revision, annotator, client = setup
    url = f"/api/annotation/revisions/{revision.pk}/mask"
    zipped = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
    assert zipped["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped["Vary"]
    assert gzip.decompress(zipped.content) == services.read_labels(revision).tobytes()
    assert zipped["Cache-Control"].startswith("private") and revision.checksum in zipped["ETag"]
    again = client.get(url, HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=zipped["ETag"])
    assert again.status_code == 304 and again.content == b""
    plain = client.get(url, HTTP_IF_NONE_MATCH=zipped["ETag"])  # another representation: sent in full
    assert plain.status_code == 200 and plain.content == services.read_labels(revision).tobytes()
    assert plain["ETag"] != zipped["ETag"] and client.get(url, HTTP_IF_NONE_MATCH=plain["ETag"]).status_code == 304


def test_a_whole_mask_draft_is_stored_as_sent_unless_the_gzip_is_poor(setup):
    task, revision, annotator, client = setup
    labels = model_labels(revision.shape)[None].copy()
    sent = mask_upload(labels, revision.pk)
    assert client.put(f"/api/annotation/tasks/{task.pk}/draft", **sent).status_code == 200
    assert bytes(Draft.objects.get(task=task).data) == sent["data"]  # not inflated and deflated again
    stored = gzip.compress(labels.tobytes(), compresslevel=0)  # valid, but no smaller than the mask
    poor = {**sent, "data": stored}
    assert client.put(f"/api/annotation/tasks/{task.pk}/draft", **poor).status_code == 200
    draft = Draft.objects.get(task=task)
    assert len(draft.data) < len(stored) and np.array_equal(workflow.draft_labels(draft), labels)
