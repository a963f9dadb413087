"""gunicorn settings, read by ``gunicorn config.wsgi`` run from the repository root (gunicorn loads
``./gunicorn.conf.py`` by default). Each value can be overridden on the command line or in
``GUNICORN_CMD_ARGS``; ``WEB_CONCURRENCY`` and ``PORT`` are gunicorn's own variables.

The import path comes from the installed project (``make venv`` / ``pip install --no-deps -e .``,
see pyproject.toml), not from this file.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent

wsgi_app = "config.wsgi:application"
# Threaded workers: annotators' calls (WADO frames, autosaves) mostly wait on the database and
# storage, so 2 processes x 8 threads serve 30 concurrent annotators on 2 cores far better than 3
# sync workers (docs/backend.md, "Load").
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("PLEURA_WEB_THREADS", "8"))
# Keep database connections between requests (one per thread) unless the operator says otherwise.
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "60")
# Uploads are de-identified in the request: allow minutes before a worker is killed.
timeout = int(os.environ.get("PLEURA_WEB_TIMEOUT", "300"))
graceful_timeout = 30
# Recycle each worker after about this many requests, so memory a large upload took is returned.
# At ~40 requests/s a lower value would restart a worker (losing its label-map cache and
# connections) every few seconds.
max_requests = int(os.environ.get("PLEURA_WEB_MAX_REQUESTS", "2000"))
max_requests_jitter = int(os.environ.get("PLEURA_WEB_MAX_REQUESTS_JITTER", "200"))
accesslog = "-"
# Access-log lines name the path only: query strings (e.g. WADO UIDs) stay out of the logs.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'


def on_starting(server: Any) -> None:
    """Collect static files (admin, API docs, the viewer bundle) before the workers start.

    whitenoise serves them from ``STATIC_ROOT``; an image that collected them at build time sets
    ``PLEURA_COLLECTSTATIC=0``.
    """
    if os.environ.get("PLEURA_COLLECTSTATIC", "1") == "0":
        return
    command = [sys.executable, str(ROOT / "manage.py"), "collectstatic", "--noinput", "--verbosity", "0"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"collectstatic failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
