"""The statistics task through a REAL Celery worker process on REDIS_URL's Redis DB and the test database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backend_factories import make_dicom
from config.celery import app as celery_app
from imaging.models import Project, Series
from imaging.services import ingest
from imaging.sources import SourceFile
from imaging.tasks import compute_series_statistics_task
from worker_helpers import Processes, process_env, processes, wait_for  # noqa: F401 (fixture)


@pytest.fixture
def worker(processes: Processes, tmp_path: Path) -> dict[str, Any]:
    """A worker on REDIS_URL's Redis DB and a queue of its own."""
    env = process_env(tmp_path)
    _, log = processes.worker(env)
    return {"url": env["REDIS_URL"], "queue": env["PLEURA_DEFAULT_QUEUE"], "log": log}


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

    wait_for(done, 60, "the worker to store the statistics", logs=(worker["log"],))
    series.refresh_from_db()
    assert series.stats["slices"] == 3 and series.stats["unit"] == "HU"
    assert series.stats["min"] == -50.0 and series.stats["max"] == 13.0 + 2.0
    assert "imaging.compute_series_statistics" in worker["log"].read_text()
