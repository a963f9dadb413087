"""REST API of exports: export jobs (create, progress, ranged download) and label imports. Views stay thin."""

from __future__ import annotations

import logging
import re

from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import project_ids_for

from . import imports, services
from .errors import ExportError
from .models import ExportJob, ExportStatus
from .serializers import ExportJobSerializer, ExportRequestSerializer, LabelImportSerializer

logger = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
CHUNK_BYTES = 1 << 20


def error_response(exc: ExportError) -> Response:
    """A domain error as ``{"detail": message}`` with its 4xx status."""
    return Response({"detail": str(exc)}, status=exc.status_code)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """``(start, end)`` inclusive of a single ``bytes=`` range; ``None`` for none/ignored; ``False`` if unsatisfiable."""
    match = _RANGE.fullmatch((header or "").strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # absent, multi-range or malformed: serve the whole file (RFC 9110 allows ignoring it)
    if match.group(1) == "":
        length = int(match.group(2))
        return (max(0, size - length), size - 1) if length > 0 and size > 0 else False
    start = int(match.group(1))
    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    return (start, end) if start <= end and start < size else False


def ranged_file_response(request: Request, name: str, size: int, filename: str, etag: str) -> HttpResponse:
    """Stream a stored file in 1 MiB chunks, honouring a single HTTP ``Range`` (206 / 416)."""
    byte_range = _byte_range(request.headers.get("Range"), size)
    if byte_range is False:
        response = HttpResponse(status=status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE)
        response["Content-Range"] = f"bytes */{size}"
        return response
    start, end = byte_range or (0, size - 1)
    handle = default_storage.open(name, "rb")
    handle.seek(start)

    def chunks() -> object:
        remaining = end - start + 1
        try:
            while remaining > 0:
                data = handle.read(min(CHUNK_BYTES, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data
        finally:
            handle.close()

    response = StreamingHttpResponse(chunks(), status=206 if byte_range else 200, content_type="application/zip")
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = f'"{etag}"'
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    if byte_range:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


class ExportJobViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Dataset exports of the projects where the user is an ML engineer or project admin.

    ``POST`` ``{"format": ..., "selection": {"kind": "filter", "project_id": ..., ...}}`` queues a
    job (202); ``GET /api/exports/<id>/`` shows its progress; ``GET /api/exports/<id>/download/``
    streams the archive and honours ``Range: bytes=...``.
    """

    serializer_class = ExportJobSerializer
    permission_classes = [IsAuthenticated]
    filterset_fields = ["project", "format", "status"]

    def get_queryset(self) -> QuerySet:
        # every member sees the job exists (404 for others); the role is checked per action (403)
        return ExportJob.objects.filter(project_id__in=project_ids_for(self.request.user)).select_related("requested_by")

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        if self.action == "list":
            queryset = queryset.filter(project_id__in=project_ids_for(self.request.user, services.EXPORT_ROLES))
        return super().filter_queryset(queryset)

    def get_object(self) -> ExportJob:
        job = super().get_object()
        try:
            services.check_may_export(self.request.user, job.project_id)
        except ExportError as exc:
            raise PermissionDenied(str(exc)) from exc
        return job

    @extend_schema(request=ExportRequestSerializer, responses={202: ExportJobSerializer})
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        body = ExportRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            job = services.create_export(request.user, body.validated_data["format"], body.validated_data["selection"],
                                         body.options())
        except ExportError as exc:
            return error_response(exc)
        return Response(ExportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The finished archive (zip), streamed; ``Range`` requests give 206 partial content."""
        job = self.get_object()
        if job.status != ExportStatus.SUCCEEDED or not job.archive:
            return Response({"detail": f"export {job.pk} is {job.status}; the archive is ready when it succeeded"
                             + (f" (error: {job.error})" if job.error else "")}, status=status.HTTP_409_CONFLICT)
        filename = f"pleura-{job.project.name}-{job.format}-{job.dataset_hash[:12]}.zip"
        url = default_storage.url(job.archive.name)
        if url.startswith(("https://", "http://")):  # object storage: its signed URL serves ranges itself
            return HttpResponseRedirect(url)
        return ranged_file_response(request, job.archive.name, int(job.archive_size or 0), filename, job.archive_sha256)


class LabelImportViewSet(viewsets.ViewSet):
    """``POST /api/exports/imports/``: import a DICOM SEG, RTSTRUCT or NIfTI label volume as a revision."""

    permission_classes = [IsAuthenticated]
    serializer_class = LabelImportSerializer

    @extend_schema(request={"multipart/form-data": LabelImportSerializer}, responses={201: None})
    def create(self, request: Request) -> Response:
        body = LabelImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        upload = data["file"]
        try:
            services.check_may_export(request.user, data["project"])
            revisions = imports.import_labels(
                project_id=data["project"], name=upload.name, data=upload.read(), user=request.user,
                mapping=data.get("mapping"), series_id=data.get("series"))
        except ExportError as exc:
            return error_response(exc)
        return Response({"revisions": [{"id": r.pk, "target_key": r.target_key, "number": r.number,
                                        "source": r.source, "status": r.status} for r in revisions]},
                        status=status.HTTP_201_CREATED)
