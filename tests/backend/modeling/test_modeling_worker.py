"""Proposals through real Redis and real Celery worker processes (no eager mode).

Each test starts ``celery -A config worker --pool solo`` as a subprocess on the pytest test
database and Redis DB 14 (a queue name of its own per test), and queues work through
``manage.py import_studies`` in another subprocess: the real path ingest → series_ingested →
proposal job → broker → worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection

from annotation.models import MaskRevision
from imaging.models import Project
from modeling.models import JobStatus, ProposalJob
from proposal_helpers import TINY_CXR, ct_series_files, xray_png
from quality.models import QCSummary

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
REDIS_DB_URL = os.environ.get("PLEURA_TEST_WORKER_REDIS", "redis://127.0.0.1:6379/14")
VISIBILITY_TIMEOUT_S = 3


@pytest.fixture
def worker_env(tmp_path: Path) -> dict[str, str]:
    """Environment of worker and producer subprocesses: the test database, Redis DB 14, this test's storage."""
    if connection.vendor != "postgresql":
        pytest.skip("worker tests share the test database with a subprocess: they need PostgreSQL (DATABASE_URL)")
    try:
        redis.Redis.from_url(REDIS_DB_URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_DB_URL}: {exc}")
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "PLEURA_"))}
    env.update(
        DATABASE_URL=f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        REDIS_URL=REDIS_DB_URL, PLEURA_DATA_DIR=str(tmp_path), PLEURA_CELERY_EAGER="0",
        PLEURA_BROKER_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT_S), PLEURA_PROPOSAL_RETRY_BACKOFF="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "backend"), str(REPO)]), DJANGO_SETTINGS_MODULE="config.settings",
        OMP_NUM_THREADS="2",
        # a queue of its own, so that concurrent test runs on the same Redis never take each other's jobs
        PLEURA_DEFAULT_QUEUE=f"pleura-test-{uuid.uuid4().hex[:12]}",
    )
    env["PLEURA_TASK_ROUTES"] = json.dumps({"modeling.tasks.*": {"queue": env["PLEURA_DEFAULT_QUEUE"]}})
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen, Path]]]:
    """Start worker processes (each logs to its own file); all are terminated at the end."""
    started: list[subprocess.Popen] = []

    def _start() -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"worker-{len(started)}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
               "-Q", worker_env["PLEURA_DEFAULT_QUEUE"],
               "-n", f"pleura-test-{uuid.uuid4().hex[:8]}@localhost", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel", "INFO"]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=worker_env, stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        _wait(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 240, f"worker start ({log})")
        if proc.poll() is not None:
            pytest.fail(f"worker exited at start:\n{log.read_text()[-3000:]}")
        return proc, log

    yield _start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    connection.close()


def _wait(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05,
          logs: tuple[Path, ...] = ()) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-4000:]}" for log in logs if log.is_file())
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{tails}")


def _import(paths: list[Path], project: Project, env: dict[str, str]) -> None:
    """Ingest through the management command in its own process (it queues jobs on Redis DB 14)."""
    cmd = [sys.executable, "manage.py", "import_studies", *map(str, paths), "--project", project.name, "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_worker_runs_xray_proposals_and_loads_the_model_once(project, tiny_cxr_version, worker_env, start_worker,
                                                            tmp_path):
    _, log = start_worker()
    files = []
    for i in range(3):
        path = tmp_path / "upload" / f"chest{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(xray_png(seed=i))
        files.append(path)
    _import(files, project, worker_env)
    jobs = ProposalJob.objects.filter(project=project)
    done = jobs.filter(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED])
    _wait(lambda: done.count() == 3, 300, "3 proposals", interval_s=0.2, logs=(log,))
    assert sorted(jobs.values_list("status", flat=True)) == [JobStatus.SUCCEEDED] * 3, list(jobs.values("error"))
    assert MaskRevision.objects.filter(project=project).count() == 3
    assert QCSummary.objects.filter(revision__project=project).count() == 3
    assert len({j.worker for j in jobs}) == 1
    assert log.read_text().count(f"loaded model {TINY_CXR} on ") == 1  # once per worker process, not per task


def test_killed_worker_job_is_redelivered_and_completes_exactly_once(project, ct_version_without_weights, worker_env,
                                                                     start_worker, tmp_path):
    folder = tmp_path / "upload" / "ct"
    folder.mkdir(parents=True)
    for name, data in ct_series_files(depth=96, size=256, spacing=3.0):
        (folder / name).write_bytes(data)
    first, _ = start_worker()
    _import([folder], project, worker_env)
    job = _wait(lambda: ProposalJob.objects.filter(project=project, status=JobStatus.RUNNING).first(), 240,
                "the CT job to start")
    first.send_signal(signal.SIGKILL)  # mid-job: no ack, no result
    first.wait(timeout=10)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.attempts == 1
    assert not MaskRevision.objects.filter(proposal_job=job).exists()

    start_worker()  # restores the unacknowledged message once the visibility timeout has passed
    _wait(lambda: ProposalJob.objects.get(pk=job.pk).status in (JobStatus.SUCCEEDED, JobStatus.FAILED), 300,
          "the redelivered job", interval_s=0.2)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2 and job.method == "classical"
    time.sleep(VISIBILITY_TIMEOUT_S + 1)  # a stray second delivery would show up now
    assert MaskRevision.objects.filter(target_key=job.target_key).count() == 1
    assert ProposalJob.objects.get(pk=job.pk).attempts == 2
