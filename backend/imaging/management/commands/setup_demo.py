"""``manage.py setup_demo``: idempotently create the admin user and the demo project."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand

from imaging.services import ensure_demo


class Command(BaseCommand):
    help = "Create the admin user (PLEURA_ADMIN_PASSWORD, default pleura-admin) and the 'demo' project."

    def handle(self, *args: Any, **options: Any) -> None:
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
            f"  import:   .venv/bin/python manage.py import_studies PATH --project {demo.project_name}"
        )
