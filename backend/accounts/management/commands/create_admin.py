"""``manage.py create_admin``: create the first site administrator of a production installation, once."""

from __future__ import annotations

import logging
import os
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts import audit

logger = logging.getLogger(__name__)

PASSWORD_ENV = "PLEURA_ADMIN_PASSWORD"
#: Passwords published in Pleura's documentation: never accepted for a real account.
PUBLISHED_PASSWORDS = frozenset({"pleura-admin"})


class Command(BaseCommand):
    help = (
        f"Create a superuser with the password in ${PASSWORD_ENV} (checked by the password validators). "
        "Refuses an existing username: it never resets a password (use manage.py changepassword)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, username: str, email: str, **options: Any) -> None:
        password = os.environ.get(PASSWORD_ENV, "")
        if not password:
            raise CommandError(
                f"set {PASSWORD_ENV} to the new administrator's password for this one command "
                "(or run `manage.py createsuperuser` and type it)"
            )
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            raise CommandError(
                f"user {username!r} already exists; nothing changed (change a password with "
                f"`manage.py changepassword {username}`)"
            )
        candidate = user_model(username=username, email=email)
        if password in PUBLISHED_PASSWORDS:
            raise CommandError(f"{PASSWORD_ENV} is a password published in Pleura's documentation; choose another")
        try:
            validate_password(password, candidate)
        except ValidationError as exc:
            raise CommandError(f"{PASSWORD_ENV} is too weak: {' '.join(exc.messages)}") from exc
        with transaction.atomic():
            user = user_model.objects.create_superuser(username=username, email=email, password=password)
            audit.record(None, "user.create", user, after={"username": username, "is_staff": True, "is_superuser": True},
                         reason="manage.py create_admin")
        self.stdout.write(self.style.SUCCESS(f"Created superuser {username!r}; log in at /admin/ or /login/."))
