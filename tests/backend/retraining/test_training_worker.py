"""A real Celery worker on the ``train`` queue is killed mid-run: the champion stays, the run resumes and finishes.

The worker runs ``celery -A config worker --pool solo`` in its own process group on the test database
and the Redis DB of ``REDIS_URL``; killing the group kills the worker and its ``ml train`` child, like
a machine that dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.db import connection

from modeling import training
from modeling.models import ModelStatus, ModelVersion, RunStatus, TrainingRun
from retraining import datasets
from retraining_helpers import TINY_TRAINING, curated_dataset

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/10")


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds} s waiting for {what}")


def test_killing_the_training_worker_keeps_the_champion_and_the_run_resumes(project, tiny_cxr_version, settings,
                                                                          tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("the worker shares the test database: needs PostgreSQL (DATABASE_URL)")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.3, 0.3
    settings.PLEURA_REFERENCE_SETS = {}
    curated_dataset(project)
    dataset, _ = datasets.snapshot(project, "cxr")
    long_run = {**TINY_TRAINING, "train": {**TINY_TRAINING["train"], "epochs": 12, "early_stopping_patience": 100}}
    run = training.create_run(project=project, modality="cxr", dataset_version_id=dataset.pk,
                              dataset_sha256=dataset.sha256, manifest=dataset.manifest, overrides=long_run)

    db = connection.settings_dict
    queue = f"pleura-train-test-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "PLEURA_"))}
    env.update(DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
               REDIS_URL=REDIS_URL, PLEURA_DATA_DIR=str(tmp_path), PLEURA_CELERY_EAGER="0",
               PLEURA_TRAIN_POLL_S="0.5", PLEURA_TRAIN_HEARTBEAT_TIMEOUT_S="3", OMP_NUM_THREADS="1", PLEURA_REFERENCE_SETS="{}",
               PYTHONPATH=os.pathsep.join([str(REPO / "backend"), str(REPO)]), DJANGO_SETTINGS_MODULE="config.settings")

    def start_worker(index: int) -> subprocess.Popen:
        log = tmp_path / f"train-worker-{index}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", queue,
                 "-n", f"train-{uuid.uuid4().hex[:8]}@localhost", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "--loglevel", "INFO"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 240, f"worker start ({log})")
        return proc

    producer = Celery(broker=REDIS_URL)
    first = start_worker(0)
    try:
        producer.send_task("retraining.tasks.train", args=[run.pk], queue=queue)
        _wait(lambda: len(TrainingRun.objects.get(pk=run.pk).progress) >= 1, 300, "the first epoch")
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its ml train child die together
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed = TrainingRun.objects.get(pk=run.pk)
    assert killed.status == RunStatus.RUNNING and killed.attempts == 1
    assert ModelVersion.objects.get(modality="cxr", status=ModelStatus.CHAMPION) == tiny_cxr_version
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert (Path(run.output_dir) / "last.pt").is_file()

    time.sleep(4)  # the heartbeat goes stale
    assert [r.pk for r in training.recover_stale_runs(3, max_attempts=2)] == [run.pk]
    second = start_worker(1)
    try:
        producer.send_task("retraining.tasks.train", args=[run.pk], queue=queue)
        _wait(lambda: TrainingRun.objects.get(pk=run.pk).status not in (RunStatus.QUEUED, RunStatus.RUNNING), 600,
              "the resumed run")
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=60)
    done = TrainingRun.objects.get(pk=run.pk)
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert done.attempts == 2 and [row["epoch"] for row in done.progress] == list(range(1, 13))
    assert "resum" in (Path(run.output_dir) / "train.log").read_text().lower()
    assert ModelVersion.objects.filter(training_run=run).count() == 1
