"""``manage.py create_project NAME [--modality ct] [--no-deidentify] [--review-fraction 0.5] [--admin USER]``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from administration import services
from administration.models import ProjectModality


class Command(BaseCommand):
    help = "Create a project with its modality, de-identification and review settings (the site operator's setup)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="project name (letters, digits, - and _)")
        parser.add_argument("--description", default="")
        parser.add_argument("--modality", choices=ProjectModality.values, default=ProjectModality.MIXED)
        parser.add_argument("--no-deidentify", action="store_true", help="keep identifiers (default: de-identify)")
        parser.add_argument("--review-fraction", type=float, default=1.0)
        parser.add_argument("--auto-approve-confidence", type=float, default=None)
        parser.add_argument("--double-read-fraction", type=float, default=0.0)
        parser.add_argument("--agreement-threshold", type=float, default=0.9)
        parser.add_argument("--admin", help="existing username to make the project's first admin")

    def handle(self, *args: Any, **options: Any) -> None:
        admin = None
        if options["admin"]:
            admin = get_user_model().objects.filter(username=options["admin"]).first()
            if admin is None:
                raise CommandError(f"no user named {options['admin']!r}; create it with add_member --create first")
        try:
            project = services.create_project(
                None, options["name"], description=options["description"], modality=options["modality"],
                deidentify=not options["no_deidentify"], admin=admin,
                review_fraction=options["review_fraction"], auto_approve_confidence=options["auto_approve_confidence"],
                double_read_fraction=options["double_read_fraction"], agreement_threshold=options["agreement_threshold"])
        except services.AdministrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"created project {project.name} (id {project.pk})"))
