"""Issue 21 item 6: re-running a model on a target with a person's revision never overwrites their work."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from accounts.models import Role
from annotation.models import AnnotationTask, MaskRevision, RevisionSource, RevisionStatus, TaskStatus
from annotation.services import read_labels
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from modeling.models import ModelVersion
from proposal_helpers import xray_png

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "annotation"))
from workflow_helpers import mask_upload  # noqa: E402  (the annotation tests' upload helper)

pytestmark = pytest.mark.django_db


def _rerun(client: Any, version: ModelVersion, series: Series, capture: Any) -> MaskRevision:
    with capture(execute=True):
        response = client.post("/api/proposals/rerun/", {"model_version": version.name, "series": series.pk},
                               format="json")
    assert response.status_code == 202, response.content
    return MaskRevision.objects.get(proposal_job_id=response.json()[0]["id"])


@pytest.fixture
def proposed(project, tiny_cxr_version, django_capture_on_commit_callbacks) -> tuple[Series, MaskRevision, ModelVersion]:
    """An ingested X-ray with the champion's proposal, and a second model version to re-run with."""
    with django_capture_on_commit_callbacks(execute=True):
        result = ingest(project, [SourceFile("chest.png", xray_png())])
    series = Series.objects.get(pk=result.series[0].pk)
    other = ModelVersion.objects.create(name="tiny-cxr-rerun", modality="cxr", sha256=tiny_cxr_version.sha256,
                                        weights_file=tiny_cxr_version.weights_file)
    return series, MaskRevision.objects.get(series=series), other


def test_rerun_on_a_curated_target_is_a_side_proposal(project, proposed, make_member, client_for,
                                                      django_capture_on_commit_callbacks):
    series, proposal, other = proposed
    task = AnnotationTask.objects.get(target_key=proposal.target_key)
    annotator = client_for(make_member(project, Role.ANNOTATOR))
    engineer = client_for(make_member(project, Role.ML_ENGINEER))

    edited = np.zeros((1, *proposal.shape), np.uint8)
    edited[0, 10:60, 10:40], edited[0, 10:60, 50:90] = 1, 2
    done = annotator.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(edited, proposal.pk))
    assert done.status_code == 201, done.content
    human = MaskRevision.objects.get(pk=done.json()["revision_id"])

    side = _rerun(engineer, other, series, django_capture_on_commit_callbacks)
    assert (side.source, side.status, side.model_version) == (RevisionSource.MODEL, RevisionStatus.SIDE, other)
    assert side.parent_id == human.pk and side.number == human.number + 1

    human.refresh_from_db()
    task.refresh_from_db()
    assert human.status == RevisionStatus.SUBMITTED and task.status == TaskStatus.IN_REVIEW
    assert np.array_equal(read_labels(human), edited[0])
    payload = annotator.get(f"/api/annotation/tasks/{task.pk}/").json()
    assert payload["revision"]["id"] == human.pk  # the person's revision stays current

    # once a reviewer returns the task, editing goes on from the person's revision: the side
    # proposal is not a newer parent (no 409)
    from annotation.review import services as review_services

    review_services.return_to_annotator(task.pk, make_member(project, Role.REVIEWER), human.pk, "fix the base")
    again = annotator.post(f"/api/annotation/tasks/{task.pk}/submit", **mask_upload(edited, human.pk))
    assert again.status_code == 201, again.content
    assert MaskRevision.objects.get(pk=again.json()["revision_id"]).parent_id == human.pk


def test_rerun_on_an_untouched_target_becomes_current(project, proposed, make_member, client_for,
                                                       django_capture_on_commit_callbacks):
    series, first, other = proposed
    engineer = client_for(make_member(project, Role.ML_ENGINEER))
    second = _rerun(engineer, other, series, django_capture_on_commit_callbacks)
    assert second.status == RevisionStatus.PROPOSED and second.parent_id == first.pk
