"""Schedules: a nightly django-celery-beat check per project, a trigger after N curated labels, one run per dataset version."""

from __future__ import annotations

import json

import pytest
from django_celery_beat.models import PeriodicTask

from annotation.signals import revision_curated
from modeling.models import RunStatus, TrainingRun
from retraining import schedules
from retraining.models import RetrainingPolicy
from retraining_helpers import TINY_TRAINING, curated_dataset, curated_xray

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _small(settings):
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.3, 0.3
    settings.PLEURA_REFERENCE_SETS = {}
    settings.PLEURA_TRAIN_OVERRIDES = TINY_TRAINING
    settings.PLEURA_TRAIN_POLL_S = 0.2


def test_a_new_project_gets_a_nightly_check_per_modality(project):
    policies = RetrainingPolicy.objects.filter(project=project)
    assert sorted(policies.values_list("modality", flat=True)) == ["ct", "cxr"]
    task = PeriodicTask.objects.get(pk=policies.get(modality="cxr").nightly_task_id)
    assert task.task == schedules.CHECK_TASK and task.crontab.hour == "2" and task.enabled
    assert json.loads(task.kwargs) == {"project_id": project.pk, "modality": "cxr", "reason": "nightly"}
    assert schedules.ensure_all_policies() == RetrainingPolicy.objects.count()  # idempotent
    assert PeriodicTask.objects.get(task=schedules.SWEEP_TASK).interval.every == 10


def test_the_check_starts_one_run_per_dataset_version(project, tiny_cxr_version, django_capture_on_commit_callbacks):
    assert schedules.check_project(project.pk, "cxr").startswith("skipped: project")  # nothing curated yet
    curated_dataset(project)
    with django_capture_on_commit_callbacks(execute=True):
        first = schedules.check_project(project.pk, "cxr")
    assert first.startswith("started run")
    assert TrainingRun.objects.get().status == RunStatus.SUCCEEDED
    with django_capture_on_commit_callbacks(execute=True):
        again = schedules.check_project(project.pk, "cxr")
    assert "already has a run" in again and TrainingRun.objects.count() == 1
    curated_xray(project, 100)  # a new curated label: a new dataset version
    with django_capture_on_commit_callbacks(execute=True):
        assert schedules.check_project(project.pk, "cxr").startswith("started run")
    assert TrainingRun.objects.count() == 2
    assert len(set(TrainingRun.objects.values_list("dataset_sha256", flat=True))) == 2
    assert RetrainingPolicy.objects.get(project=project, modality="cxr").last_outcome.startswith("nightly: started")


def _approved(project, seed):
    """A curated label announced as review's decision does (``annotation.signals.revision_curated``)."""
    revision = curated_xray(project, seed)
    revision_curated.send(sender=None, revision=revision)
    return revision


def test_n_new_curated_labels_trigger_a_check(project, django_capture_on_commit_callbacks):
    RetrainingPolicy.objects.filter(project=project, modality="cxr").update(min_new_labels=3)
    with django_capture_on_commit_callbacks(execute=True):
        _approved(project, 0)
        _approved(project, 1)
    assert RetrainingPolicy.objects.get(project=project, modality="cxr").last_check_at is None
    with django_capture_on_commit_callbacks(execute=True):
        _approved(project, 2)
    policy = RetrainingPolicy.objects.get(project=project, modality="cxr")
    assert policy.last_check_at is not None and policy.last_outcome.startswith("new labels: ")
