"""``manage.py export_dataset``: export a project's selection in one format, as the API does.

Without ``--out`` an export job is recorded and run in this process (archive in the storage, as
from the API); with ``--out`` the zip is written to that file only (atomically: a temporary file
renamed at the end). Operators on the server run it; no project role is checked.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exports import services
from exports.errors import ExportError
from exports.formats import WRITERS
from exports.models import ExportJob, ExportStatus
from exports.selection import MODALITY_GROUPS, QC_MODES, REVISION_MODES, SPLITS, parse_selection
from imaging.models import Project


class Command(BaseCommand):
    help = "Export a dataset (nifti, png, seg, nnunet, coco, monai) of one project with its provenance manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--format", required=True, choices=sorted(WRITERS))
        parser.add_argument("--modality", choices=sorted(MODALITY_GROUPS))
        parser.add_argument("--revisions", choices=REVISION_MODES, default="curated")
        parser.add_argument("--split", choices=SPLITS)
        parser.add_argument("--qc", choices=QC_MODES, default="any")
        parser.add_argument("--exclude-flag", action="append", default=[], help="QC check name (repeatable)")
        parser.add_argument("--date-from", help="YYYY-MM-DD (revision creation date)")
        parser.add_argument("--date-to", help="YYYY-MM-DD")
        parser.add_argument("--test-fraction", type=float, default=0.2)
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--nnunet-id", type=int, default=501)
        parser.add_argument("--out", type=Path, help="write the zip here instead of the storage")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        data = {"kind": "filter", "project_id": project.pk, "modality": options["modality"],
                "revisions": options["revisions"], "split": options["split"], "qc": options["qc"],
                "exclude_flags": options["exclude_flag"], "date_from": options["date_from"],
                "date_to": options["date_to"], "test_fraction": options["test_fraction"], "folds": options["folds"]}
        extra = {"nnunet_id": options["nnunet_id"]} if options["format"] == "nnunet" else {}
        try:
            selection = parse_selection(data)
            cases = services.resolve(selection, options["format"])
            if options["out"] is not None:
                self._to_file(project, selection, options["format"], cases, options["out"], extra)
                return
            job = ExportJob.objects.create(project=project, format=options["format"], progress_total=len(cases), origin="command",
                                           selection={"kind": selection.kind, **selection.to_dict(), "options": extra})
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        job = services.run_export(job.pk)
        if job is None or job.status != ExportStatus.SUCCEEDED:
            raise CommandError(f"export failed: {job.error if job else 'job vanished'}")
        self.stdout.write(f"export {job.pk}: {job.case_count} cases, {job.archive_size} bytes in storage "
                          f"{job.archive.name}\ndataset hash {job.dataset_hash}")

    def _to_file(self, project: Project, selection: Any, fmt: str, cases: list[Any], out: Path,
                 extra: dict[str, Any]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                result = services.write_archive(project, selection, fmt, cases, handle, options=extra)
            os.replace(temporary, out)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.stdout.write(f"{out}: {result.case_count} cases, {out.stat().st_size} bytes\n"
                          f"dataset hash {result.dataset_hash}")
