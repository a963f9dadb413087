"""An export job through a REAL Celery worker process on real Redis (the database of REDIS_URL) and the test database."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection

from accounts.models import Role
from config.celery import app as celery_app
from exports.models import ExportJob, ExportStatus
from exports.tasks import run_export_task
from imaging.signals import series_ingested
from export_helpers import add_xray

BACKEND_DIR = Path(settings.BACKEND_DIR)


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def export_worker(tmp_path: Path) -> Any:
    """One ``celery worker --pool solo`` on a queue of its own, on the Redis database REDIS_URL names."""
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("the real-worker test needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL)")
    parsed = urlparse(settings.REDIS_URL)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=3).close()
    except OSError:
        pytest.skip(f"Redis not reachable at {parsed.hostname}:{parsed.port}")
    queue = f"exports-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    env = {**os.environ, "DATABASE_URL": _database_url(), "REDIS_URL": settings.REDIS_URL,
           "PLEURA_DATA_DIR": str(tmp_path), "PLEURA_CELERY_EAGER": "0",
           "PYTHONPATH": os.pathsep.join([str(BACKEND_DIR), str(BACKEND_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "--pool", "solo", "-Q", queue,
               "-n", f"{queue}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=BACKEND_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: "ready." in log.read_text() or process.poll() is not None, 90, "the worker to start", log)
        assert process.poll() is None, log.read_text()[-3000:]
        yield {"queue": queue, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait(predicate: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; worker log:\n{log.read_text()[-3000:]}")


class _NoCapture:
    """Stand-in for ``django_capture_on_commit_callbacks`` where commits are real (transactional test)."""

    def __call__(self, execute: bool = False) -> Any:
        import contextlib

        return contextlib.nullcontext()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_export_job_runs_on_a_real_worker(export_worker: dict[str, Any], project: Any, make_member: Any) -> None:
    series_ingested.disconnect(dispatch_uid="modeling.queue_proposals_on_ingest")  # labels are given: no model
    try:
        revisions = [add_xray(project, _NoCapture(), seed=i) for i in range(3)]
    finally:
        from modeling.receivers import connect_ingest_hook

        connect_ingest_hook()
    engineer = make_member(project, Role.ML_ENGINEER)
    job = ExportJob.objects.create(project=project, requested_by=engineer, format="coco", progress_total=3,
                                   selection={"kind": "filter", "project_id": project.pk})
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    with celery_app.connection_for_write(settings.REDIS_URL) as broker:
        run_export_task.apply_async(args=[job.pk], connection=broker, queue=export_worker["queue"])
    _wait(lambda: ExportJob.objects.filter(pk=job.pk, status__in=[ExportStatus.SUCCEEDED, ExportStatus.FAILED]).exists(),
          120, "the worker to finish the export", export_worker["log"])
    job.refresh_from_db()
    assert job.status == ExportStatus.SUCCEEDED, job.error
    assert job.progress_done == job.case_count == 3 and "exports.tasks.run_export" in export_worker["log"].read_text()
    with default_storage.open(job.archive.name, "rb") as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    assert sorted(c["label"]["revision_id"] for c in json.loads(archive.read("manifest.json"))["cases"]) == sorted(
        r.pk for r in revisions)
