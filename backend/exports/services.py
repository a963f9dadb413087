"""Export services shared by the API, the page, the Celery task and ``manage.py export_dataset``.

An export resolves a selection to cases (:mod:`exports.selection`), writes them in one format
(:mod:`exports.formats`) into a zip in a temporary file with the provenance manifest
(:mod:`exports.manifest`), and only then saves the finished archive through the Django storage
API (local or S3-compatible). Memory holds one case at a time; a failed export leaves no archive.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Role
from accounts.permissions import has_role
from annotation.services import curated_q
from imaging.models import Project

from . import formats, manifest
from .errors import EmptySelectionError, ExportError, ExportPermissionError, SelectionError
from .models import ExportJob, ExportStatus, ProjectDataTerms
from .selection import Case, Selection, parse_selection

logger = logging.getLogger(__name__)

#: Who may export a project's data or import labels into it.
EXPORT_ROLES: frozenset[str] = frozenset({Role.ML_ENGINEER, Role.ADMIN})
ProgressCallback = Callable[[int, int], None]


def _curated_revisions(qs: QuerySet) -> QuerySet:
    """The curated revisions among ``qs``: approved in review (``annotation.services.curated_q``,
    the platform's one definition of "curated")."""
    return qs.filter(curated_q())


def check_may_export(user: Any, project_id: int) -> None:
    """Raise :class:`ExportPermissionError` unless ``user`` is an ML engineer or admin of the project."""
    if user is None or not has_role(user, project_id, EXPORT_ROLES):
        raise ExportPermissionError(
            f"exports and label imports of project {project_id} are for its ML engineers and project admins; "
            "ask a project admin for the role")


def resolve(selection: Selection, fmt: str) -> list[Case]:
    """The cases of a selection, checked against the format.

    Raises:
        UnknownFormatError, EmptySelectionError, IncompatibleSelectionError, SelectionError.
    """
    formats.writer_class(fmt)
    if not Project.objects.filter(pk=selection.project_id).exists():
        raise SelectionError(f"project {selection.project_id} does not exist")
    cases = selection.resolve()
    if any(c.revision.project_id != selection.project_id for c in cases):  # defence in depth
        raise SelectionError("the selection resolved to cases of another project")
    if not cases:
        raise EmptySelectionError(
            f"the selection matches no case in project {selection.project_id} "
            f"({', '.join(f'{k}={v}' for k, v in selection.to_dict().items() if v not in (None, [], ''))}); "
            "widen it (e.g. revisions=latest, no split or QC filter)")
    formats.check_all(fmt, cases)
    return cases


def terms_of(project: Project) -> tuple[str, str]:
    """``(licence, source)`` text of a project; empty strings when not stated."""
    terms = ProjectDataTerms.objects.filter(project=project).first()
    return (terms.licence, terms.source) if terms else ("", "")


def readme_text(project: Project, fmt: str, selection: Selection, digest: str, count: int, licence: str,
                source: str) -> str:
    """The README.md of an archive: what it holds, its layout, how to verify it, the terms."""
    return "\n".join([
        f"# Pleura dataset export: project {project.name}", "",
        f"- format: {fmt}", f"- cases: {count}", f"- dataset hash (sha256): {digest}",
        f"- selection: {manifest.canonical_json(selection.to_dict()).decode()}", "",
        "## Layout", "", formats.writer_class(fmt).readme, "",
        "manifest.json: per case the pseudonymous patient/study/series ids, split and fold, the label's revision",
        "chain (model version, annotators, actions, timestamps, time spent), QC flags, the label map's sha256 and",
        "the files of the case. Labels: 0 background, 1 right lung, 2 left lung.", "",
        "## Dataset hash", "", manifest.HASH_DEFINITION + ".",
        "Recompute it from manifest.json: the 'cases' entries without their 'files' key.", "",
        "## Licence", "", licence or "Not stated for this project.", "",
        "## Source", "", source or "Not stated for this project.", "",
    ])


@dataclass(frozen=True)
class ArchiveResult:
    """What :func:`write_archive` wrote."""

    dataset_hash: str
    case_count: int


def write_archive(project: Project, selection: Selection, fmt: str, cases: list[Case], out: IO[bytes],
                  progress: ProgressCallback | None = None, options: dict[str, Any] | None = None) -> ArchiveResult:
    """Write the zip archive of ``cases`` in ``fmt`` to the binary file ``out``.

    Args:
        options: format options (``nnunet_id``); the project's name, secret and terms are added.
        progress: called with ``(cases done, total)`` after each case.
    """
    licence, source = terms_of(project)
    opts = {"project_name": project.name, "secret": project.deid_secret, "licence": licence,
            "folds": getattr(selection, "folds", 5), **(options or {})}
    provenance = manifest.provenance(cases)
    digest = manifest.dataset_hash(project.label_schema, provenance)
    with zipfile.ZipFile(out, "w", allowZip64=True) as zf:
        archive = formats.Archive(zf)
        writer = formats.writer_class(fmt)(archive, opts)
        files: dict[str, dict[str, str]] = {}
        for index, (case, prepared) in enumerate(_prepared(writer, cases), start=1):
            writer.write(case, prepared)
            files[case.case_id] = prepared.files
            if progress is not None:
                progress(index, len(cases))
        writer.finish(cases, files)
        archive.write_json("manifest.json", {
            "format": fmt, "created_at": timezone.now().isoformat(), "project": project.name,
            "label_schema": project.label_schema, "selection": selection.to_dict(),
            "dataset_hash": digest, "dataset_hash_definition": manifest.HASH_DEFINITION,
            "licence": licence, "source": source, "case_count": len(cases),
            "cases": [{**p, "files": files[p["case_id"]]} for p in provenance],
        })
        archive.write_bytes("README.md", readme_text(project, fmt, selection, digest, len(cases), licence, source).encode(),
                            compress=True)
        archive.write_bytes("LICENSE.txt", (licence or "No licence stated for this project.\n").encode(), compress=True)
    return ArchiveResult(digest, len(cases))


def _prepared(writer: formats.Writer, cases: list[Case]) -> Iterator[tuple[Case, formats.Prepared]]:
    """Cases prepared by ``PLEURA_EXPORT_THREADS`` threads, yielded in case order.

    At most two cases per thread are in flight for 2D images (PNG/zlib and pydicom release the
    GIL), one at a time for 3D series, so memory holds a bounded number of cases.
    """
    threads = max(1, int(getattr(settings, "PLEURA_EXPORT_THREADS", 2)))
    window = 1 if any(c.is_3d for c in cases) else 2 * threads
    pending: deque[tuple[Case, Future[formats.Prepared]]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pleura-export") as pool:
        for case in cases:
            instances = formats.case_instances(case)  # database reads stay in this thread
            pending.append((case, pool.submit(writer.prepare, case, instances)))
            if len(pending) >= window:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def create_export(user: Any, fmt: str, selection_data: Any, options: dict[str, Any] | None = None) -> ExportJob:
    """Validate a request and queue its job (after commit); errors leave nothing behind.

    Raises:
        SelectionError, UnknownFormatError, EmptySelectionError, IncompatibleSelectionError,
        ExportPermissionError: with a message for the person asking.
    """
    selection = parse_selection(selection_data)
    check_may_export(user, selection.project_id)
    cases = resolve(selection, fmt)
    selection_dict = {"kind": selection.kind, **selection.to_dict()}
    if options:
        selection_dict["options"] = options
    job = ExportJob.objects.create(project_id=selection.project_id, requested_by=user, format=fmt,
                                   selection=selection_dict, progress_total=len(cases))
    from .tasks import run_export_task

    transaction.on_commit(lambda: _queue(job, run_export_task))
    return job


def _queue(job: ExportJob, task: Any) -> None:
    result = task.delay(job.pk)
    ExportJob.objects.filter(pk=job.pk, celery_task_id="").update(celery_task_id=result.id or "")


def _progress_saver(job: ExportJob) -> ProgressCallback:
    step = {"next": 0}

    def save(done: int, total: int) -> None:
        if done >= step["next"] or done == total:
            ExportJob.objects.filter(pk=job.pk).update(progress_done=done, progress_total=total)
            step["next"] = done + max(1, total // 50)

    return save


def _fail(job: ExportJob, message: str) -> ExportJob:
    job.status, job.error, job.finished_at = ExportStatus.FAILED, message, timezone.now()
    job.save(update_fields=["status", "error", "finished_at"])
    logger.warning("export %s failed: %s", job.pk, message)
    return job


def run_export(job_id: int) -> ExportJob | None:
    """Run a queued export job: resolve, write the archive to a temporary file, save it to storage.

    The requester's role is checked again (a revoked permission fails the job). Domain errors fail
    the job with their message; any other error fails it and propagates. Only a finished archive
    is saved, and it is removed again if the job row cannot record it.
    """
    job = ExportJob.objects.select_related("project", "requested_by").filter(pk=job_id).first()
    if job is None or job.status == ExportStatus.SUCCEEDED:
        return job
    job.status, job.started_at, job.error = ExportStatus.RUNNING, timezone.now(), ""
    job.save(update_fields=["status", "started_at", "error"])
    name = ""
    try:
        if job.origin == "api":  # the operator's command-line jobs have no requester to re-check
            check_may_export(job.requested_by, job.project_id)
        data = {k: v for k, v in job.selection.items() if k != "options"}
        selection = parse_selection(data)
        cases = resolve(selection, job.format)
        with tempfile.TemporaryFile(prefix=f"pleura-export-{job.pk}-") as handle:
            result = write_archive(job.project, selection, job.format, cases, handle, _progress_saver(job),
                                   job.selection.get("options"))
            size = handle.tell()
            handle.seek(0)
            digest = _sha256_of(handle)
            handle.seek(0)
            name = default_storage.save(
                f"exports/{job.project_id}/export-{job.pk}-{job.format}-{result.dataset_hash[:12]}.zip", File(handle))
        job.archive, job.archive_size, job.archive_sha256 = name, size, digest
        job.dataset_hash, job.case_count = result.dataset_hash, result.case_count
        job.status, job.finished_at, job.progress_done = ExportStatus.SUCCEEDED, timezone.now(), result.case_count
        job.save()
    except ExportError as exc:
        _delete(name)
        return _fail(job, str(exc))
    except BaseException as exc:
        _delete(name)
        _fail(job, f"unexpected error: {type(exc).__name__}: {exc}")
        raise
    logger.info("export %s: %d cases in %s, %d bytes, dataset hash %s", job.pk, job.case_count, job.format,
                job.archive_size, job.dataset_hash)
    return job


def _sha256_of(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _delete(name: str) -> None:
    if name:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("could not delete the archive %s of a failed export", name)
