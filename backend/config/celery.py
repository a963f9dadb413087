"""Celery application.

Broker and result backend come from ``REDIS_URL`` through the Django settings (namespace
``CELERY_``). Without ``REDIS_URL`` the settings switch tasks to eager mode, so the embedded
default runs them in-process.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("pleura")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
