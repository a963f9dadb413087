"""Celery application, and :func:`publish` for sending work from a web request.

Broker and result backend come from ``REDIS_URL`` through the Django settings (namespace
``CELERY_``). Without ``REDIS_URL`` the settings switch tasks to eager mode, so the embedded
default runs them in-process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task
from kombu.exceptions import OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)

app = Celery("pleura")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

#: What sending to an unreachable or silent broker raises (kombu wraps the client's errors).
BROKER_ERRORS: tuple[type[BaseException], ...] = (OperationalError, OSError)
#: After a failed send, further sends from this process are skipped for this many seconds.
BROKER_BACKOFF_S = 30.0
_unreachable_until = 0.0


def publish(task: Task, args: Sequence[Any], **options: Any) -> bool:
    """``task.apply_async(args, **options)`` with no result kept; ``False`` when the broker cannot be reached.

    Work sent from here is followed through the database (job rows, series statistics), never
    through Celery results: ``ignore_result`` spares the sender a result-backend subscription per
    message (another connection to a broker that may be down) and Redis the stored results.
    Each send is bounded by the broker timeouts of the settings (``PLEURA_BROKER_TIMEOUT_S``).
    After a failure the process does not try again for ``BROKER_BACKOFF_S`` seconds, so that a
    request queuing many jobs answers after one timeout, not one per job. Callers keep what was
    not sent in the database (pending jobs) for a later sweep. In eager mode the task runs here and
    its own errors propagate as they are.
    """
    global _unreachable_until
    options = {"ignore_result": True, **options}
    if task.app.conf.task_always_eager:
        task.apply_async(args=list(args), **options)
        return True
    if time.monotonic() < _unreachable_until:
        return False
    try:
        task.apply_async(args=list(args), **options)
    except BROKER_ERRORS as exc:
        _unreachable_until = time.monotonic() + BROKER_BACKOFF_S
        logger.warning("broker unreachable (%s: %s); %s not sent, no new try for %.0f s", type(exc).__name__,
                       str(exc).splitlines()[0][:200] if str(exc) else "", task.name, BROKER_BACKOFF_S)
        return False
    return True
