"""REST API of annotation: mask revisions and their label maps (raw for the viewer, PNG/NIfTI downloads)."""

from __future__ import annotations

import gzip
import logging

from django.db.models import Q, QuerySet
from django.http import HttpResponse
from django.utils.cache import get_conditional_response, patch_vary_headers
from django_filters import rest_framework as filters
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from accounts.permissions import project_ids_for

from . import services, workflow
from .labelmaps import LabelMapError
from .models import MaskRevision
from .serializers import MaskRevisionSerializer

logger = logging.getLogger(__name__)
#: Revisions are immutable (append-only lineage): browsers keep a label map and revalidate it by checksum.
REVISION_CACHE_CONTROL = "private, max-age=86400"


class MaskRevisionFilter(filters.FilterSet):
    study = filters.NumberFilter(field_name="series__study_id")
    curated = filters.BooleanFilter(method="filter_curated", label="curated (approved) revisions only, or none of them")

    def filter_curated(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        return queryset.filter(services.curated_q()) if value else queryset.exclude(services.curated_q())

    class Meta:
        model = MaskRevision
        fields = ["project", "study", "series", "instance", "target_key", "source", "status", "model_version"]


class MaskRevisionViewSet(viewsets.ReadOnlyModelViewSet):
    """Mask revisions of the user's projects (append-only; newest number = latest)."""

    queryset = MaskRevision.objects.select_related("model_version", "author", "series")
    serializer_class = MaskRevisionSerializer
    permission_classes = [IsAuthenticated]
    filterset_class = MaskRevisionFilter
    ordering_fields = ["created_at", "number"]

    def get_queryset(self) -> QuerySet:
        user = self.request.user
        blinded = Q(first_of_double_read__status="awaiting_second") & ~Q(author_id=getattr(user, "pk", None))
        return super().get_queryset().filter(project_id__in=project_ids_for(user)).exclude(blinded)

    @action(detail=True, methods=["get"])
    def labelmap(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The label map as raw C-order uint8 bytes; shape, dtype and spacing in ``X-`` headers."""
        revision = self.get_object()
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        # a revision never changes: a browser that has it gets a 304 (one tag per encoding)
        etag = f'"{revision.checksum}{"-gzip" if gzipped else ""}"'
        response = get_conditional_response(request, etag=etag)
        if response is not None:
            response["ETag"], response["Cache-Control"] = etag, REVISION_CACHE_CONTROL
            return response
        try:
            labels = workflow.revision_labels(revision)  # decoded once per process; the autosaves read it too
        except LabelMapError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        body = labels.tobytes(order="C")
        response = HttpResponse(content_type="application/octet-stream")
        if gzipped:  # label maps shrink ~100x already at level 1
            body, response["Content-Encoding"] = gzip.compress(body, compresslevel=1, mtime=0), "gzip"
        response.content = body
        patch_vary_headers(response, ("Accept-Encoding",))
        response["ETag"], response["Cache-Control"] = etag, REVISION_CACHE_CONTROL
        response["X-Shape"] = ",".join(str(n) for n in labels.shape)
        response["X-Dtype"] = "uint8"
        response["X-Spacing"] = ",".join(str(s) for s in revision.spacing) if revision.spacing else ""
        response["X-Orientation"] = "instance-grid"
        response["X-Checksum"] = revision.checksum
        response["Access-Control-Expose-Headers"] = "X-Shape, X-Dtype, X-Spacing, X-Orientation, X-Checksum"
        return response

    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The label map as a file: ``?kind=png`` (2D) or ``?kind=nifti`` (.nii.gz, 2D or 3D)."""
        revision = self.get_object()
        kind = request.query_params.get("kind", "png" if len(revision.shape) == 2 else "nifti")
        try:
            data, content_type, filename = services.export(revision, kind)
        except LabelMapError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        response = HttpResponse(data, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
