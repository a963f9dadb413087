"""``manage.py requeue_proposals``: send again proposal jobs whose message was lost."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from modeling.services import requeue_stale


class Command(BaseCommand):
    help = "Re-queue proposal jobs queued, retrying or running for longer than --older-than seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, default=3600.0,
                            help="seconds (default 3600; keep it above the broker visibility timeout)")

    def handle(self, *args: Any, **options: Any) -> None:
        jobs = requeue_stale(options["older_than"])
        self.stdout.write(f"re-queued {len(jobs)} job(s): {', '.join(str(j.pk) for j in jobs) or '-'}")
