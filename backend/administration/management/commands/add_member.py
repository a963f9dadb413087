"""``manage.py add_member USERNAME --project NAME --role annotator [--create] [--password-env VAR]``.

Gives a user a role in a project (changing it when they are a member already); with ``--create``
the account is made first, its password read from the environment variable named by
``--password-env`` (never from the command line, where ``ps`` would show it).
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Role
from administration import services
from imaging.models import Project


class Command(BaseCommand):
    help = "Give a user a role in a project, creating the account with --create."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--create", action="store_true", help="create the account if it does not exist")
        parser.add_argument("--password-env", help="environment variable holding the new account's password")
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="site staff (may create projects)")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}; create it with create_project")
        user = get_user_model().objects.filter(username=options["username"]).first()
        try:
            if user is None:
                if not options["create"]:
                    raise CommandError(f"no user named {options['username']!r}; add --create to make the account")
                password = None
                if options["password_env"]:
                    password = os.environ.get(options["password_env"])
                    if not password:
                        raise CommandError(f"environment variable {options['password_env']} is empty or unset")
                user = services.create_user(options["username"], password, email=options["email"], staff=options["staff"])
                self.stdout.write(f"created user {user.get_username()}" + ("" if password else " (no password yet)"))
            services.set_member(None, project, user, options["role"])
        except services.AdministrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"{user.get_username()} is {options['role']} in {project.name}"))
