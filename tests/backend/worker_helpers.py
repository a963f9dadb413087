"""Real worker, beat and web processes for tests, on the pytest test database and REDIS_URL's Redis DB.

The Redis database is the one ``REDIS_URL`` names (each engineer and CI run has its own); each
test also uses a queue of its own, so that runs sharing a Redis DB never take each other's jobs.
Nothing here flushes Redis.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def redis_url() -> str:
    """``REDIS_URL`` (with its DB number), or skip: worker tests need a real Redis."""
    url = os.environ.get("REDIS_URL", "")
    if not url:
        pytest.skip("worker tests need Redis: set REDIS_URL (its DB number is the one they use)")
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=3).close()
    except OSError as exc:
        pytest.skip(f"Redis not reachable at {parsed.hostname}:{parsed.port}: {exc}")
    return url


def closed_port_url(url: str) -> str:
    """``url`` with its port replaced by a local port nothing listens on (an unreachable broker)."""
    return urlunparse(urlparse(url)._replace(netloc=f"127.0.0.1:{free_port()}"))


def database_url() -> str:
    """URL of the test database pytest-django created (subprocesses must use the same one)."""
    if connection.vendor != "postgresql":
        pytest.skip("worker tests share the test database with subprocesses: they need PostgreSQL (DATABASE_URL)")
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment of worker, beat and web subprocesses: test database, REDIS_URL, a queue of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "PLEURA_"))}
    queue = f"pleura-test-{uuid.uuid4().hex[:12]}"
    env.update(
        DATABASE_URL=database_url(), REDIS_URL=redis_url(), PLEURA_DATA_DIR=str(data_dir), PLEURA_CELERY_EAGER="0",
        PLEURA_PROPOSAL_RETRY_BACKOFF="1", DJANGO_SETTINGS_MODULE="config.settings", OMP_NUM_THREADS="2",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        PLEURA_DEFAULT_QUEUE=queue, PLEURA_TASK_ROUTES=json.dumps({"modeling.tasks.*": {"queue": queue}}),
    )
    env.update(overrides)
    return env


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1,
             logs: tuple[Path, ...] = ()) -> Any:
    """Poll ``condition`` until it returns something true; fail with the logs' tails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-4000:]}" for log in logs if log.is_file())
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{tails}")


class Processes:
    """Starts subprocesses that log to files under ``folder``; :meth:`stop_all` ends those still running."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen] = []

    def _start(self, name: str, cmd: list[str], env: dict[str, str], ready: bytes) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO / "backend", env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(proc)
        wait_for(lambda: ready in log.read_bytes() or proc.poll() is not None, 240, f"{name} start", logs=(log,))
        if proc.poll() is not None:
            pytest.fail(f"{name} exited at start:\n{log.read_text()[-3000:]}")
        return proc, log

    def worker(self, env: dict[str, str], pool: str = "solo") -> tuple[subprocess.Popen, Path]:
        """``celery -A config worker`` on the env's queue."""
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", pool, "--concurrency", "1",
               "-Q", env["PLEURA_DEFAULT_QUEUE"], "-n", f"pleura-test-{uuid.uuid4().hex[:8]}@localhost",
               "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
        return self._start("worker", cmd, env, b"ready.")

    def beat(self, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        """``celery -A config beat`` with django-celery-beat's DatabaseScheduler (as docs/proposals.md says)."""
        cmd = [sys.executable, "-m", "celery", "-A", "config", "beat", "-S",
               "django_celery_beat.schedulers:DatabaseScheduler", "--loglevel", "INFO",
               "--pidfile", str(self.folder / f"beat-{uuid.uuid4().hex[:6]}.pid")]
        return self._start("beat", cmd, env, b"beat: Starting")

    def web(self, env: dict[str, str], port: int) -> tuple[subprocess.Popen, Path]:
        """``manage.py runserver`` (no reloader) on ``port``."""
        cmd = [sys.executable, str(REPO / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"]
        return self._start("web", cmd, env, b"Quit the server")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        connection.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Subprocesses of one test, ended at its end."""
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def free_port() -> int:
    """A local TCP port free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
