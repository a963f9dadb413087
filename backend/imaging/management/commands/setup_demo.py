"""``manage.py setup_demo``: idempotently create the demo admin user and the demo project.

Only for the embedded demo: the admin's default password is published, so the command refuses
to run unless the settings use the development ``SECRET_KEY`` (``DEBUG=1`` without a key of its
own, as ``make demo`` runs). Production creates its first admin with ``manage.py create_admin``.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.security import DEVELOPMENT_SECRET_KEY

from imaging.services import ensure_demo


class Command(BaseCommand):
    help = "Create the admin user (PLEURA_ADMIN_PASSWORD, default pleura-admin) and the 'demo' project."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.SECRET_KEY != DEVELOPMENT_SECRET_KEY:
            raise CommandError(
                "setup_demo creates an admin with a published password and runs only in the embedded demo "
                "(DEBUG=1 without SECRET_KEY, as `make demo` does); create a production administrator with "
                "`PLEURA_ADMIN_PASSWORD=... manage.py create_admin --username NAME` (docs/deploy.md)"
            )
        password_env = os.environ.get("PLEURA_ADMIN_PASSWORD")
        demo = ensure_demo(password=password_env or "pleura-admin", reset_password=bool(password_env))
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        url = f"http://{host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"Pleura is ready: {url}"))
        self.stdout.write(f"  login:    {demo.username} / {demo.password_hint}")
        self.stdout.write(f"  API:      {url}api/   docs: {url}api/docs/   admin: {url}admin/")
        self.stdout.write(f"  project:  '{demo.project_name}' (id {demo.project_id})")
        self.stdout.write(f"  token:    {demo.token}  (header 'Authorization: Token {demo.token}')")
        self.stdout.write(
            f"  import:   DEBUG=1 .venv/bin/python manage.py import_studies PATH --project {demo.project_name}"
        )
