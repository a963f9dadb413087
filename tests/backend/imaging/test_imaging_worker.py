"""The statistics task through a REAL Celery worker process on real Redis and the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
from django.conf import settings
from django.db import connection

from backend_factories import make_dicom
from config.celery import app as celery_app
from imaging.models import Project, Series
from imaging.services import ingest
from imaging.sources import SourceFile
from imaging.tasks import compute_series_statistics_task

WORKER_REDIS_DB = 15
BACKEND_DIR = Path(settings.BACKEND_DIR)


def worker_redis_url() -> str:
    """The configured Redis with the database number replaced by a dedicated one."""
    parsed = urlparse(settings.REDIS_URL or "redis://127.0.0.1:6379/0")
    return urlunparse(parsed._replace(path=f"/{WORKER_REDIS_DB}"))


def database_url() -> str:
    """URL of the test database pytest-django created (the worker must use the same one)."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(predicate: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; worker log:\n{log.read_text()[-3000:]}")


@pytest.fixture
def worker(tmp_path: Path) -> Any:
    if connection.vendor != "postgresql":
        pytest.skip("the real-worker test needs PostgreSQL (set DATABASE_URL)")
    url = worker_redis_url()
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=3).close()
    except OSError:
        pytest.skip(f"Redis not reachable at {parsed.hostname}:{parsed.port}")
    import redis

    redis.Redis.from_url(url).flushdb()
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": url,
        "PLEURA_DATA_DIR": str(tmp_path),
        "PLEURA_CELERY_EAGER": "0",
        "PYTHONPATH": os.pathsep.join([str(BACKEND_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    command = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "--pool", "solo",
        "-Q", queue, "-n", f"pytest-{uuid.uuid4().hex[:8]}@%h", "--without-heartbeat", "--without-gossip",
        "--without-mingle",
    ]
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=BACKEND_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "ready." in log.read_text() or process.poll() is not None, 90, "the worker to start", log)
        assert process.poll() is None, log.read_text()[-3000:]
        yield {"url": url, "queue": queue, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_statistics_task_runs_on_real_worker(worker: dict[str, Any]) -> None:
    project = Project.objects.create(name="worker-test")
    files = [SourceFile(f"{i}.dcm", make_dicom(instance_number=i + 1, z=float(i))) for i in range(3)]
    series = ingest(project, files).series[0]
    Series.objects.filter(pk=series.pk).update(stats=None, stats_computed_at=None)  # computed eagerly on commit

    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    with celery_app.connection_for_write(worker["url"]) as broker:
        compute_series_statistics_task.apply_async(args=[series.pk], connection=broker, queue=worker["queue"])

    def done() -> bool:
        return Series.objects.filter(pk=series.pk, stats__isnull=False).exists()

    wait_for(done, 60, "the worker to store the statistics", worker["log"])
    series.refresh_from_db()
    assert series.stats["slices"] == 3 and series.stats["unit"] == "HU"
    assert series.stats["min"] == -50.0 and series.stats["max"] == 13.0 + 2.0
    assert "imaging.compute_series_statistics" in worker["log"].read_text()
