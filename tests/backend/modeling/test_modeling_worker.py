"""Proposals through real Redis and real Celery worker processes (no eager mode).

Each test starts ``celery -A config worker --pool solo`` as a subprocess on the pytest test
database and the Redis DB of ``REDIS_URL`` (a queue name of its own per test), and queues work
through ``manage.py import_studies`` in another subprocess: the real path ingest → series_stored
→ pending proposal job → broker → worker. Killed and frozen workers: test_modeling_jobs_worker.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from annotation.models import MaskRevision
from imaging.models import Project
from modeling.models import JobStatus, ProposalJob
from proposal_helpers import TINY_CXR, xray_png
from quality.models import QCSummary
from worker_helpers import REPO, Processes, process_env, processes, wait_for  # noqa: F401 (fixture)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def import_studies(paths: list[Path], project: Project, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Ingest through the management command in its own process (it queues the jobs on Redis)."""
    cmd = [sys.executable, "manage.py", "import_studies", *map(str, paths), "--project", project.name, "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_worker_runs_xray_proposals_and_loads_the_model_once(project, tiny_cxr_version, processes: Processes,
                                                            tmp_path):
    env = process_env(tmp_path)
    _, log = processes.worker(env)
    files = []
    for i in range(3):
        path = tmp_path / "upload" / f"chest{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(xray_png(seed=i))
        files.append(path)
    import_studies(files, project, env)
    jobs = ProposalJob.objects.filter(project=project)
    done = jobs.filter(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED])
    wait_for(lambda: done.count() == 3, 300, "3 proposals", interval_s=0.2, logs=(log,))
    assert sorted(jobs.values_list("status", flat=True)) == [JobStatus.SUCCEEDED] * 3, list(jobs.values("error"))
    assert MaskRevision.objects.filter(project=project).count() == 3
    assert QCSummary.objects.filter(revision__project=project).count() == 3
    assert len({j.worker for j in jobs}) == 1
    assert log.read_text().count(f"loaded model {TINY_CXR} on ") == 1  # once per worker process, not per task
