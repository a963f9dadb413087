"""Job reliability with real processes: unreachable broker, killed and frozen workers, time limits.

Web (``manage.py runserver``), worker (``celery -A config worker``) and beat (``celery -A config
beat -S django_celery_beat.schedulers:DatabaseScheduler``) run as subprocesses on the pytest test
database and the Redis DB of ``REDIS_URL``, each test on a queue of its own. The sweep runs as the
periodic task the beat schedule holds in the database, with short settings
(``PLEURA_JOB_HEARTBEAT_S=1``, ``PLEURA_JOB_STALE_S=4``, ``PLEURA_JOB_SWEEP_INTERVAL_S=2``); the
broker's own redelivery is left at its default hour, so only the sweep can recover a job here.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from rest_framework.authtoken.models import Token

from accounts.models import Membership, User
from annotation.models import MaskRevision
from imaging.models import Instance, Project, Upload
from modeling.models import JobStatus, ProposalJob
from proposal_helpers import ct_series_files
from test_modeling_worker import import_studies
from worker_helpers import (  # noqa: F401 (processes: fixture)
    Processes,
    closed_port_url,
    free_port,
    process_env,
    processes,
    redis_url,
    wait_for,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

FAST_SWEEP = {"PLEURA_JOB_HEARTBEAT_S": "1", "PLEURA_JOB_STALE_S": "4", "PLEURA_JOB_SWEEP_INTERVAL_S": "2"}


def ct_folder(tmp_path: Path, depth: int, size: int) -> Path:
    folder = tmp_path / "upload" / f"ct{depth}"
    folder.mkdir(parents=True)
    for name, data in ct_series_files(depth=depth, size=size, spacing=3.0):
        (folder / name).write_bytes(data)
    return folder


def finished(job: ProposalJob) -> bool:
    return ProposalJob.objects.filter(pk=job.pk, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).exists()


def post_upload(port: int, project: Project, token: str, files: list[tuple[str, bytes]]) -> tuple[int, dict, float]:
    """POST /api/uploads/ to the web process; ``(status, body, seconds)``.

    The 30 s socket timeout only turns a hang (the old behaviour was ~40 s) into a failure.
    """
    body = encode_multipart(BOUNDARY, {"project": str(project.pk),
                                       "files": [SimpleUploadedFile(n, d) for n, d in files]})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/uploads/", data=body, method="POST",
                                     headers={"Content-Type": MULTIPART_CONTENT, "Authorization": f"Token {token}"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return status, json.loads(text or b"{}") if text.startswith(b"{") else {"raw": text[:500]}, \
        time.monotonic() - started


@pytest.fixture(params=["refused", "silent"])
def dead_broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker URL on a closed port (connection refused), or on a port that accepts and never answers."""
    url = redis_url()
    if request.param == "refused":
        yield closed_port_url(url)
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes the handshakes; nothing ever reads or answers
        yield urlunparse(urlparse(url)._replace(netloc=f"127.0.0.1:{silent.getsockname()[1]}"))


def test_upload_with_unreachable_broker_is_stored_whole_and_sent_by_the_sweep(
        project, ct_version_without_weights, processes: Processes, tmp_path, dead_broker_url):
    env = process_env(tmp_path, **FAST_SWEEP)
    user = User.objects.create_user("uploader", password="pw-123456")
    Membership.objects.create(user=user, project=project, role="admin")
    token = Token.objects.create(user=user).key
    port = free_port()
    _, web_log = processes.web({**env, "REDIS_URL": dead_broker_url}, port)

    files = ct_series_files(depth=12, size=32)
    status, body, seconds = post_upload(port, project, token, files)
    print(f"upload with the broker unreachable ({dead_broker_url}) answered {status} in {seconds:.2f} s")
    assert status == 201, (body, web_log.read_text()[-3000:])
    assert body["proposals"] == {"pending": 1} and body["num_instances"] == 12
    job = ProposalJob.objects.get(project=project)
    assert job.status == JobStatus.PENDING and job.celery_task_id == ""
    stored = [Path(tmp_path / "media" / name) for name in Instance.objects.values_list("file", flat=True)]
    assert len(stored) == 12 and all(path.is_file() for path in stored)  # rows and files, whole

    status, body, _ = post_upload(port, project, token, files)  # a client's retry: duplicates of stored files
    assert status == 201 and body["num_duplicates"] == 12 and Upload.objects.count() == 2

    _, worker_log = processes.worker(env)  # the broker is back (for beat and worker)
    processes.beat(env)
    wait_for(lambda: finished(job), 300, "the pending job to be sent by the sweep and run", logs=(worker_log,))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1, job.error
    assert MaskRevision.objects.filter(series=job.series).count() == 1
    assert "modeling.tasks.sweep_jobs" in worker_log.read_text()


def running_ct_job(project: Project, processes: Processes, tmp_path: Path
                   ) -> tuple[dict[str, str], subprocess.Popen, Path, ProposalJob]:
    """A worker running a CT proposal (96 slices of 256²: seconds of work): ``(env, worker, log, job)``."""
    env = process_env(tmp_path, **FAST_SWEEP)
    first, first_log = processes.worker(env)
    import_studies([ct_folder(tmp_path, depth=96, size=256)], project, env)
    job = wait_for(lambda: ProposalJob.objects.filter(project=project, status=JobStatus.RUNNING).first(), 240,
                   "the CT job to start")
    return env, first, first_log, job


def test_killed_worker_job_is_requeued_by_the_beat_sweep_exactly_once(
        project, ct_version_without_weights, processes: Processes, tmp_path):
    env, first, _, job = running_ct_job(project, processes, tmp_path)
    first.send_signal(signal.SIGKILL)  # mid-job: no ack, no result, no more heartbeats
    first.wait(timeout=10)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.attempts == 1
    assert not MaskRevision.objects.filter(proposal_job=job).exists()

    _, log = processes.worker(env)
    processes.beat(env)
    wait_for(lambda: finished(job), 300, "the requeued job", logs=(log,))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2 and job.method == "classical"
    assert "no heartbeat" in log.read_text()  # requeued by the sweep (the broker would wait an hour)
    time.sleep(6)  # further sweeps: a stray second run would show up now
    assert MaskRevision.objects.filter(target_key=job.target_key).count() == 1
    assert ProposalJob.objects.get(pk=job.pk).attempts == 2


def test_frozen_worker_that_finishes_after_the_requeue_adds_no_second_revision(
        project, ct_version_without_weights, processes: Processes, tmp_path):
    env, first, first_log, job = running_ct_job(project, processes, tmp_path)
    first.send_signal(signal.SIGSTOP)  # alive but silent: its heartbeat stops
    try:
        _, log = processes.worker(env)
        processes.beat(env)
        wait_for(lambda: finished(job), 300, "the requeued job", logs=(log,))
    finally:
        first.send_signal(signal.SIGCONT)  # the original attempt goes on and completes too
    wait_for(lambda: "completed twice" in first_log.read_text(), 300, "the original attempt to finish",
             logs=(first_log,))
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2, job.error
    assert MaskRevision.objects.filter(target_key=job.target_key).count() == 1


def test_soft_time_limit_fails_the_job_with_its_reason(project, ct_version_without_weights, processes: Processes,
                                                       tmp_path):
    env = process_env(tmp_path, PLEURA_CT_SOFT_TIME_LIMIT_S="1", PLEURA_CT_TIME_LIMIT_S="120")
    _, log = processes.worker(env, pool="prefork")  # time limits need the prefork pool
    import_studies([ct_folder(tmp_path, depth=96, size=256)], project, env)
    job = ProposalJob.objects.get(project=project)
    wait_for(lambda: finished(job), 300, "the job to stop at its time limit", logs=(log,))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 1, (job.duration_s, log.read_text()[-3000:])
    assert job.error == "ProposalTimeLimitError: the proposal ran over its time limit of 1 s"
    assert not MaskRevision.objects.filter(proposal_job=job).exists()
