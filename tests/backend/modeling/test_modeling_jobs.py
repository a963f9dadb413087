"""Job states, the sweep's rules, the slice limit and the beat schedule, in-process (eager tasks).

The same behaviour with real worker, beat and web processes: test_modeling_jobs_worker.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from annotation.models import MaskRevision
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from modeling import services
from modeling.models import JobStatus, ModelVersion, ProposalJob
from modeling.schedules import ensure_periodic_tasks
from proposal_helpers import ct_series_files

pytestmark = pytest.mark.django_db(transaction=True)  # commit hooks run as in production


def upload_ct(project: Any, depth: int = 12) -> Series:
    """Ingest a small synthetic CT series (12 slices of 32²) into ``project``."""
    files = [SourceFile(name, data) for name, data in ct_series_files(depth=depth, size=32)]
    return ingest(project, files).series[0]


def test_ct_series_over_the_slice_limit_is_refused_with_the_reason(project, ct_version_without_weights, settings):
    settings.PLEURA_CT_MAX_SLICES = 10
    series = upload_ct(project, depth=12)
    job = ProposalJob.objects.get(series=series)
    assert job.status == JobStatus.FAILED and job.attempts == 0 and job.celery_task_id == ""
    assert job.error == (f"CT series {series.pk} has 12 slices, over the limit of 10 (PLEURA_CT_MAX_SLICES); "
                         "the proposal was not run")
    assert not MaskRevision.objects.filter(series=series).exists()
    assert services.run_job(job.pk) is None  # a stray delivery does not run it either


def test_a_message_for_a_series_over_the_limit_is_not_run(new_job, settings):
    settings.PLEURA_CT_MAX_SLICES = 10  # lowered after the job was queued
    assert services.start_job(new_job.pk) is None
    new_job.refresh_from_db()
    assert new_job.status == JobStatus.FAILED and new_job.attempts == 0 and "over the limit of 10" in new_job.error


def _running(job: ProposalJob, heartbeat_age_s: float, started_age_s: float, attempts: int = 1) -> None:
    now = timezone.now()
    ProposalJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, attempts=attempts,
        heartbeat_at=now - dt.timedelta(seconds=heartbeat_age_s), started_at=now - dt.timedelta(seconds=started_age_s))


@pytest.fixture
def new_job(project, settings, request) -> ProposalJob:
    """A CT job stored but never sent (tests set it to the state the sweep should find)."""
    settings.PLEURA_JOB_STALE_S = 60
    ModelVersion.objects.filter(modality="ct").delete()  # the shipped ones seeded by migrate, if any
    series = upload_ct(project)  # no CT champion: the upload queues nothing
    version = request.getfixturevalue("ct_version_without_weights")
    return ProposalJob.objects.create(project=project, series=series, target_key=f"series:{series.pk}",
                                      modality="ct", model_version=version)


def test_sweep_leaves_a_live_job_alone(new_job):
    _running(new_job, heartbeat_age_s=5, started_age_s=100)
    report = services.sweep_jobs()
    assert report.as_dict() == {"requeued": [], "failed": [], "dispatched": [], "still_pending": []}
    assert ProposalJob.objects.get(pk=new_job.pk).status == JobStatus.RUNNING


def test_sweep_fails_a_job_lost_too_often_and_one_over_its_time_limit(new_job, settings):
    job = new_job
    _running(job, heartbeat_age_s=120, started_age_s=130, attempts=settings.PLEURA_JOB_MAX_ATTEMPTS)
    report = services.sweep_jobs()
    job.refresh_from_db()
    assert report.failed == [job.pk] and job.status == JobStatus.FAILED
    assert job.error == f"JobLost: its worker was lost {job.attempts} times (killed, or over the memory or time limit)"

    settings.PLEURA_CT_TIME_LIMIT_S = 100
    _running(job, heartbeat_age_s=1, started_age_s=100 + 60 + 5)  # beating (hung in a solo pool), past the limit
    report = services.sweep_jobs()
    job.refresh_from_db()
    assert report.failed == [job.pk] and job.error == "JobLost: ran over its time limit of 100 s and was stopped"
    assert not MaskRevision.objects.filter(series=job.series).exists()


def test_sweep_requeues_a_job_without_heartbeat_and_a_late_original_adds_nothing(new_job):
    job = new_job
    _running(job, heartbeat_age_s=120, started_age_s=130)
    late_result = services.compute(job)  # what the silent original attempt will hand in later
    report = services.sweep_jobs()  # requeued and (eager) run again at once
    job.refresh_from_db()
    assert report.requeued == [job.pk] and report.dispatched == [job.pk]
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    services.complete_job(job.pk, late_result)
    assert MaskRevision.objects.filter(target_key=job.target_key).count() == 1
    assert ProposalJob.objects.get(pk=job.pk).revision_id == job.revision_id


def test_sweep_sends_pending_jobs_once_their_grace_has_passed(new_job):
    job = new_job
    ProposalJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
    assert services.sweep_jobs().dispatched == []  # may still be being sent by the request that made it
    ProposalJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=services.DISPATCH_GRACE_S + 1))
    report = services.sweep_jobs()
    job.refresh_from_db()
    assert report.dispatched == [job.pk] and job.status == JobStatus.SUCCEEDED and job.celery_task_id
    assert MaskRevision.objects.filter(target_key=job.target_key).count() == 1


def test_beat_schedule_is_in_the_database_and_follows_the_setting(db, settings):
    settings.PLEURA_JOB_SWEEP_INTERVAL_S = 45
    ensure_periodic_tasks()
    ensure_periodic_tasks()  # idempotent
    task = PeriodicTask.objects.get(task=services.SWEEP_TASK)
    assert PeriodicTask.objects.filter(task=services.SWEEP_TASK).count() == 1
    assert task.enabled and task.interval.every == 45 and task.interval.period == "seconds"
    assert task.expire_seconds == 45
