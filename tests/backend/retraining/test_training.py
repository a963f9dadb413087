"""Training runs: a tiny real run end to end (train → candidate → evaluation → gate), one active run, cancel, stale runs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from modeling import training
from modeling.models import ModelStatus, ModelVersion, RunStatus, TrainingRun
from retraining import datasets, jobs
from retraining.models import Evaluation, PromotionDecision
from retraining_helpers import TINY_TRAINING, curated_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(project, settings):
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.3, 0.3
    settings.PLEURA_REFERENCE_SETS = {}
    settings.PLEURA_TRAIN_OVERRIDES = TINY_TRAINING
    settings.PLEURA_TRAIN_POLL_S = 0.2
    curated_dataset(project)
    version, _ = datasets.snapshot(project, "cxr")
    return version


def test_a_training_run_fine_tunes_the_champion_and_goes_through_the_gate(project, tiny_cxr_version, dataset,
                                                                           django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = jobs.start_training(project, dataset)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.init_from == tiny_cxr_version and run.dataset_sha256 == dataset.sha256 and run.seed == 42
    assert run.code_version and run.code_version != "unknown"
    assert run.config["model"]["init_from"].endswith("tiny-cxr-test.pt") and run.config["train"]["epochs"] == 1
    assert len(run.progress) == 1 and "val_dice" in run.progress[0] and run.progress[0]["epoch"] == 1
    out = Path(run.output_dir)
    assert (out / "metrics.csv").is_file() and (out / "train.log").is_file() and (out / "best.pt").is_file()
    candidate = ModelVersion.objects.get(training_run=run)
    decision = PromotionDecision.objects.get(candidate=candidate)
    assert decision.champion == tiny_cxr_version and decision.reason
    tiny_cxr_version.refresh_from_db()
    assert (candidate.status == ModelStatus.CHAMPION) == decision.promoted
    assert (tiny_cxr_version.status == ModelStatus.CHAMPION) == (not decision.promoted)
    assert Evaluation.objects.filter(dataset_version=dataset).count() == 2
    # nothing runs twice for the same dataset version
    with pytest.raises(training.RunConflictError, match="already"):
        jobs.start_training(project, dataset)


def test_at_most_one_active_run_per_project_and_modality(project, tiny_cxr_version, dataset):
    jobs.start_training(project, dataset)  # stays queued: on_commit never runs inside the test transaction
    other = datasets.DatasetVersion(project=project, modality="cxr", sha256="f" * 64, number=99)
    with pytest.raises(training.RunConflictError, match="already active"):
        training.create_run(project=project, modality="cxr", dataset_version_id=1, dataset_sha256=other.sha256,
                            manifest=dataset.manifest)


def test_cancel_stops_the_training_process(project, tiny_cxr_version, dataset):
    run = training.create_run(project=project, modality="cxr", dataset_version_id=dataset.pk,
                              dataset_sha256=dataset.sha256, manifest=dataset.manifest,
                              overrides={**TINY_TRAINING, "train": {**TINY_TRAINING["train"], "epochs": 50}})
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    assert training.run_training(run.pk) is None
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.error == "cancelled by request"
    assert not ModelVersion.objects.filter(training_run=run).exists()
    queued = training.create_run(project=project, modality="cxr", dataset_version_id=dataset.pk,
                                 dataset_sha256=dataset.sha256, manifest=dataset.manifest)
    assert training.request_cancel(queued).status == RunStatus.CANCELLED


def test_a_run_whose_worker_died_resumes_then_fails_with_the_reason(project, tiny_cxr_version, dataset):
    run = training.create_run(project=project, modality="cxr", dataset_version_id=dataset.pk,
                              dataset_sha256=dataset.sha256, manifest=dataset.manifest)
    old = timezone.now() - dt.timedelta(hours=1)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts=1, heartbeat_at=old, worker="w:1")
    assert [r.pk for r in training.recover_stale_runs(600, max_attempts=2)] == [run.pk]
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.QUEUED
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts=2, heartbeat_at=old)
    assert training.recover_stale_runs(600, max_attempts=2) == []
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "stopped sending heartbeats" in run.error
    tiny_cxr_version.refresh_from_db()
    assert tiny_cxr_version.status == ModelStatus.CHAMPION


def test_runs_api_starts_lists_and_cancels(project, other_project, tiny_cxr_version, dataset, make_member,
                                           client_for):
    from accounts.models import Role

    engineer, annotator = make_member(project, Role.ML_ENGINEER), make_member(project, Role.ANNOTATOR)
    body = {"project": project.pk, "modality": "cxr"}
    assert client_for(annotator).post("/api/retraining/runs/", body, format="json").status_code == 403
    started = client_for(engineer).post("/api/retraining/runs/", body, format="json")
    assert started.status_code == 202 and started.json()["status"] == "queued"
    assert started.json()["dataset_sha256"] == dataset.sha256  # the snapshot is the existing version
    second = client_for(engineer).post("/api/retraining/runs/", body, format="json")
    assert second.status_code == 400 and "already" in second.json()["detail"]
    ct = client_for(engineer).post("/api/retraining/runs/", {**body, "modality": "ct"}, format="json")
    assert ct.status_code == 400 and "no curated ct label" in ct.json()["detail"]
    listed = client_for(annotator).get("/api/retraining/runs/").json()["results"]
    assert [r["id"] for r in listed] == [started.json()["id"]]
    outsider = make_member(other_project, Role.ML_ENGINEER)
    assert client_for(outsider).get("/api/retraining/runs/").json()["results"] == []
    cancelled = client_for(engineer).post(f"/api/retraining/runs/{started.json()['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
