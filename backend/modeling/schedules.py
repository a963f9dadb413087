"""Periodic tasks kept in the database (django-celery-beat).

Beat runs with ``-S django_celery_beat.schedulers:DatabaseScheduler`` and reads its schedule from
the ``django_celery_beat`` tables, editable in the Django admin ("Periodic tasks"). The schedules
the platform needs are created here, after every ``migrate`` and when beat starts, so a fresh
database and a changed setting both take effect without a manual step. Further schedules (e.g.
retraining) are added to :data:`SCHEDULES` the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from .services import SWEEP_TASK

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """A periodic task: its unique name, the Celery task, and the interval in seconds."""

    name: str
    task: str
    every_s: int
    description: str


def schedules() -> list[Schedule]:
    """The platform's periodic tasks, with intervals from the settings."""
    return [
        Schedule(
            name="modeling: sweep proposal jobs", task=SWEEP_TASK, every_s=settings.PLEURA_JOB_SWEEP_INTERVAL_S,
            description="Requeue jobs of killed workers, fail jobs over their limits, send jobs the broker "
                        "did not take (PLEURA_JOB_SWEEP_INTERVAL_S).",
        ),
    ]


def ensure_periodic_tasks() -> list[Any]:
    """Create or update the :func:`schedules` rows (idempotent); other periodic tasks are left alone.

    The interval follows the setting; whether a task is enabled stays as an admin left it.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    tasks = []
    with transaction.atomic():
        for schedule in schedules():
            interval, _ = IntervalSchedule.objects.get_or_create(every=schedule.every_s,
                                                                 period=IntervalSchedule.SECONDS)
            task, created = PeriodicTask.objects.update_or_create(
                name=schedule.name,
                defaults={"task": schedule.task, "interval": interval, "expire_seconds": schedule.every_s,
                          "description": schedule.description},
            )
            logger.info("%s periodic task %r every %d s", "created" if created else "updated", schedule.name,
                        schedule.every_s)
            tasks.append(task)
    return tasks
