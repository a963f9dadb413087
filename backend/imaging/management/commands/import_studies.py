"""``manage.py import_studies PATH [PATH ...] --project NAME``: ingest files from disk.

Each file given is one upload; a folder is walked and its files are grouped per parent folder
(one upload per folder, e.g. one DICOM series or one patient). Shows a progress bar and a
summary; a rejected upload is reported (file + reason) and the others continue.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from config.logsafe import escape
from imaging.errors import IngestError
from imaging.models import Modality, Project
from imaging.services import ingest
from imaging.sources import Limits, iter_paths, read_path

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Import DICOM files/folders/.zip, PNG/JPEG X-rays and NIfTI CT volumes into a project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--create-project", action="store_true", help="create the project if missing")
        parser.add_argument("--patient", help="patient key for PNG/JPEG/NIfTI files (hashed to a pseudonym)")
        parser.add_argument("--modality", choices=[Modality.DX, Modality.CR], default=Modality.DX)
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self._project(options["project"], options["create_project"])
        groups = self._groups(options["paths"])
        limits = Limits.from_settings()
        totals = {"uploads": 0, "failed": 0, "instances": 0, "series": 0, "duplicates": 0}
        warnings: list[str] = []
        total_files = sum(len(files) for files in groups.values())
        with tqdm(total=total_files, unit="file", disable=options["no_progress"], file=self.stderr) as bar:
            for label, files in groups.items():
                try:
                    sources = [read_path(path, name, limits) for path, name in files]
                    result = ingest(project, sources, origin="command", patient_key=options["patient"],
                                    modality=options["modality"], limits=limits, progress=bar.update)
                except IngestError as exc:
                    totals["failed"] += 1
                    with tqdm.external_write_mode(file=self.stderr):
                        self.stderr.write(self.style.ERROR(f"rejected {escape(label)}: {escape(exc.file_name)}: {escape(exc.reason, limit=1000)} [{exc.code}]"))
                    continue
                totals["uploads"] += 1
                totals["instances"] += result.num_instances
                totals["series"] += len(result.series)
                totals["duplicates"] += result.num_duplicates
                warnings.extend(result.warnings)
        for warning in warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        self.stdout.write(
            f"Imported into '{project.name}': {totals['instances']} instances in {totals['series']} series "
            f"from {totals['uploads']} upload(s); {totals['duplicates']} duplicate(s) skipped; "
            f"{totals['failed']} upload(s) rejected."
        )
        if totals["failed"]:
            raise CommandError(f"{totals['failed']} upload(s) rejected; see the messages above")

    def _project(self, name: str, create: bool) -> Project:
        project = Project.objects.filter(name=name).first()
        if project is None:
            if not create:
                raise CommandError(f"project '{name}' does not exist (use --create-project to create it)")
            project = Project.objects.create(name=name)
        return project

    def _groups(self, paths: list[Path]) -> OrderedDict[str, list[tuple[Path, str]]]:
        groups: OrderedDict[str, list[tuple[Path, str]]] = OrderedDict()
        for root in paths:
            if not root.exists():
                raise CommandError(f"{root} does not exist")
            for path in iter_paths(root):
                folder = path.parent if root.is_dir() else path
                display = path.name if root.is_file() else str(path.relative_to(root.parent))
                groups.setdefault(str(folder if root.is_dir() else path), []).append((path, display))
        return groups
