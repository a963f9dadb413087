"""Manual promotion and roll-back: one atomic swap with an audit record; the new champion spares edited work."""

from __future__ import annotations

import pytest

from accounts.models import AuditEntry, Role
from annotation.models import MaskRevision, RevisionSource
from modeling.models import ModelStatus, ModelVersion, ProposalJob
from retraining.models import ChampionChange
from retraining_helpers import curated_xray

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_versions(tiny_cxr_version):
    other = ModelVersion.objects.create(name="tiny-cxr-next", modality="cxr", sha256=tiny_cxr_version.sha256,
                                        weights_file=tiny_cxr_version.weights_file)
    return tiny_cxr_version, other


def test_promote_and_roll_back_by_api(project, make_member, client_for, two_versions,
                                      django_capture_on_commit_callbacks):
    old, new = two_versions
    engineer, annotator = make_member(project, Role.ML_ENGINEER), make_member(project, Role.ANNOTATOR)
    body = {"model_version": new.name, "reason": "better on our scanners"}
    assert client_for(annotator).post("/api/retraining/champions/promote/", body, format="json").status_code == 403
    assert client_for(engineer).post("/api/retraining/champions/promote/", {"model_version": new.name},
                                     format="json").status_code == 400  # a reason is required

    edited = curated_xray(project, 0)  # a person's work: no new proposal for it
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(engineer).post("/api/retraining/champions/promote/", body, format="json")
    assert response.status_code == 201, response.content
    old.refresh_from_db(); new.refresh_from_db()
    assert (new.status, old.status) == (ModelStatus.CHAMPION, ModelStatus.CANDIDATE)
    entry = AuditEntry.objects.get(action="model.manual")
    assert entry.before == {"champion": old.name} and entry.after == {"champion": new.name}
    assert entry.reason == "better on our scanners" and entry.actor == engineer
    assert not ProposalJob.objects.filter(series=edited.series, model_version=new).exists()

    again = client_for(engineer).post("/api/retraining/champions/promote/", body, format="json")
    assert again.status_code == 400 and "already" in again.json()["detail"]

    back = client_for(engineer).post("/api/retraining/champions/rollback/", {"modality": "cxr", "reason": "regression"},
                                     format="json")
    assert back.status_code == 201 and back.json()["champion_name"] == old.name
    old.refresh_from_db()
    assert old.status == ModelStatus.CHAMPION and ChampionChange.objects.count() == 2
    assert AuditEntry.objects.filter(action="model.rollback").count() == 1
    assert client_for(engineer).get("/api/retraining/champions/").json()["results"][0]["kind"] == "rollback"


def test_new_champion_proposes_only_for_unedited_series(project, two_versions, django_capture_on_commit_callbacks):
    from imaging.models import Series
    from imaging.services import ingest
    from imaging.sources import SourceFile
    from proposal_helpers import xray_png
    from retraining import promotion

    old, new = two_versions
    edited = curated_xray(project, 0)
    with django_capture_on_commit_callbacks(execute=True):
        fresh = Series.objects.get(pk=ingest(project, [SourceFile("new.png", xray_png(seed=9))]).series[0].pk)
    with django_capture_on_commit_callbacks(execute=True):
        promotion.swap_champion(new, None, ChampionChange.Kind.GATE, "gate passed")
    assert ProposalJob.objects.filter(series=fresh, model_version=new).count() == 1
    assert not ProposalJob.objects.filter(series=edited.series, model_version=new).exists()
    person = MaskRevision.objects.get(series=edited.series, source=RevisionSource.PERSON)
    assert MaskRevision.objects.filter(series=edited.series).count() == 1 and person.pk == edited.pk
    assert AuditEntry.objects.get(action="model.gate").actor_name == "system"


def test_rollback_without_history_is_refused(project, make_member, client_for, two_versions):
    engineer = make_member(project, Role.ML_ENGINEER)
    response = client_for(engineer).post("/api/retraining/champions/rollback/", {"modality": "cxr", "reason": "x"},
                                         format="json")
    assert response.status_code == 400 and "nothing to roll back" in response.json()["detail"]
