"""REST API and WADO-URI endpoint for imaging data. Views parse, call a service, respond."""

from __future__ import annotations

import logging
from typing import Any

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.exceptions import NotAcceptable, NotFound, ParseError, PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import audit
from accounts.models import Membership, Role
from accounts.permissions import (
    MANAGE_ROLES,
    UPLOAD_ROLES,
    ProjectRolePermission,
    has_role,
    project_ids_for,
)

from . import services
from .errors import FileTooLargeError
from .filters import InstanceFilter, PatientFilter, SeriesFilter, StudyFilter, UploadFilter
from .models import Instance, Patient, Project, Series, Study, Upload
from .serializers import (
    InstanceSerializer,
    PatientSerializer,
    ProjectSerializer,
    SeriesSerializer,
    StudySerializer,
    UploadCreateSerializer,
    UploadSerializer,
)
from .sources import SourceFile

logger = logging.getLogger(__name__)
#: What the audit log keeps of a project (everything but its de-identification secret).
PROJECT_AUDIT_FIELDS = ["name", "description", "label_schema", "deidentify"]
WADO_CONTENT_TYPES = frozenset({"application/dicom", "application/dicom;transfer-syntax=*", "*/*", "*"})
#: Browsers keep an instance for a day and then revalidate it with its ETag (a 304 without the file):
#: private, since it is patient data behind a log-in.
WADO_CACHE_CONTROL = "private, max-age=86400"


class ProjectScopedMixin:
    """Limit the queryset to projects the user is a member of; writes need ``write_roles``."""

    permission_classes = [IsAuthenticated, ProjectRolePermission]
    write_roles = MANAGE_ROLES
    project_lookup = "project_id__in"

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(**{self.project_lookup: project_ids_for(self.request.user)})


class ProjectViewSet(ProjectScopedMixin, viewsets.ModelViewSet):
    """Projects the user is a member of. Site staff create projects (and become their admin)."""

    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    project_lookup = "pk__in"
    ordering_fields = ["name", "created_at"]

    def perform_create(self, serializer: ProjectSerializer) -> None:
        if not self.request.user.is_staff:
            raise PermissionDenied("only site staff can create projects")
        with transaction.atomic():
            project = serializer.save()
            membership = Membership.objects.create(user=self.request.user, project=project, role=Role.ADMIN)
            audit.record(self.request.user, "project.create", project, project_id=project.pk,
                         after=audit.snapshot(project, PROJECT_AUDIT_FIELDS))
            audit.record(self.request.user, "membership.create", membership,
                         after=audit.snapshot(membership, audit.MEMBERSHIP_FIELDS))

    def perform_update(self, serializer: ProjectSerializer) -> None:
        before = audit.snapshot(serializer.instance, PROJECT_AUDIT_FIELDS)
        with transaction.atomic():
            project = serializer.save()
            old, new = audit.changed(before, audit.snapshot(project, PROJECT_AUDIT_FIELDS))
            if old or new:
                audit.record(self.request.user, "project.update", project, project_id=project.pk, before=old, after=new)

    def perform_destroy(self, instance: Project) -> None:
        with transaction.atomic():
            audit.record(self.request.user, "project.delete", instance, project_id=instance.pk,
                         before=audit.snapshot(instance, PROJECT_AUDIT_FIELDS))
            instance.delete()


class PatientViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Patients (pseudonyms only)."""

    queryset = Patient.objects.all()
    serializer_class = PatientSerializer
    filterset_class = PatientFilter


class StudyViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Studies (de-identified UIDs and shifted dates)."""

    queryset = Study.objects.all()
    serializer_class = StudySerializer
    filterset_class = StudyFilter


def deletion_reason(request: Request) -> str:
    """The ``reason`` of a DELETE, from the JSON/form body or the query string (kept in the audit log)."""
    data = request.data if hasattr(request.data, "get") else {}
    return str(data.get("reason") or request.query_params.get("reason") or "")[:2000]


@extend_schema(methods=["DELETE"], parameters=[
    OpenApiParameter("reason", str, description="Why (kept in the audit log); also accepted in the body"),
])
class SeriesViewSet(ProjectScopedMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Series with geometry and statistics; project admins may delete a series completely.

    DELETE removes the series, its instances, mask revisions, QC, tasks, drafts and proposal jobs,
    and their stored files after commit, with an audit record (``series.delete``) holding ``reason``.
    """

    queryset = Series.objects.select_related("study")
    serializer_class = SeriesSerializer
    filterset_class = SeriesFilter
    ordering_fields = ["created_at", "series_number"]

    def perform_destroy(self, instance: Series) -> None:
        services.delete_series(instance, actor=self.request.user, reason=deletion_reason(self.request))


class InstanceViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Stored instances, ordered by position along the slice normal; ``wado_url`` loads one."""

    queryset = Instance.objects.select_related("series__study")
    serializer_class = InstanceSerializer
    filterset_class = InstanceFilter


@extend_schema(methods=["DELETE"], parameters=[
    OpenApiParameter("reason", str, description="Why (kept in the audit log); also accepted in the body"),
])
class UploadViewSet(ProjectScopedMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
                    viewsets.ReadOnlyModelViewSet):
    """Uploads: POST multipart ``project`` + ``files`` (DICOM, .zip, PNG/JPEG, NIfTI).

    DELETE (project admins) removes every series the upload added to, completely (as a series
    DELETE), and the upload record, with audit records (``series.delete``, ``upload.delete``).
    """

    queryset = Upload.objects.select_related("created_by").prefetch_related("series")
    serializer_class = UploadSerializer
    filterset_class = UploadFilter
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": UploadCreateSerializer},
        responses={
            201: UploadSerializer,
            400: OpenApiResponse(description='Bad input: {"detail", "file", "code"}'),
            413: OpenApiResponse(description="File or archive too large"),
            415: OpenApiResponse(description="Unsupported file type, transfer syntax or modality"),
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        form = UploadCreateSerializer(data=request.data)
        form.fields["project"].queryset = Project.objects.filter(pk__in=project_ids_for(request.user))
        form.is_valid(raise_exception=True)
        project: Project = form.validated_data["project"]
        if not has_role(request.user, project.pk, UPLOAD_ROLES):
            raise PermissionDenied("your role in this project does not allow uploads")
        oversized = getattr(request._request, "pleura_oversized", [])
        if oversized:
            raise FileTooLargeError(oversized[0], "the file is over the configured upload size limit")
        sources = [SourceFile(f.name, f.read()) for f in form.validated_data.get("files", [])]
        result = services.ingest(
            project, sources, user=request.user, origin="api",
            patient_key=form.validated_data.get("patient"), modality=form.validated_data["modality"],
        )
        body = UploadSerializer(result.upload, context=self.get_serializer_context()).data
        body["created_series"] = result.created_series
        # what downstream apps report, e.g. "proposals": {"pending": 1} (the broker is unreachable:
        # the jobs are stored and the sweep sends them once it is back)
        body.update(result.followups)
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: Upload) -> None:
        services.delete_upload(instance, actor=self.request.user, reason=deletion_reason(self.request))


class IgnoreAcceptNegotiation(BaseContentNegotiation):
    """WADO clients send ``Accept: application/dicom``; errors are answered as JSON regardless."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0]

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


class WadoURIView(APIView):
    """WADO-URI (DICOM PS3.18): the stored, de-identified instance as ``application/dicom``."""

    content_negotiation_class = IgnoreAcceptNegotiation
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="wado_uri",
        parameters=[
            OpenApiParameter("requestType", str, required=True, description="Must be WADO"),
            OpenApiParameter("studyUID", str, required=True),
            OpenApiParameter("seriesUID", str, required=True),
            OpenApiParameter("objectUID", str, required=True),
            OpenApiParameter("contentType", str, description="application/dicom (the default here)"),
            OpenApiParameter("project", int, description="Project id, when the same UIDs exist in several of yours"),
        ],
        responses={(200, "application/dicom"): OpenApiTypes.BINARY,
                   304: OpenApiResponse(description="Not modified: If-None-Match names the instance's ETag"),
                   404: OpenApiResponse(description="Not found")},
    )
    def get(self, request: Request) -> HttpResponseBase:
        instance = _wado_instance(request)
        etag = f'"{instance.sha256}"'  # stored instances never change: their digest names the bytes
        response = get_conditional_response(request, etag=etag)  # 304 when the browser holds these bytes
        if response is None:
            response = FileResponse(default_storage.open(instance.file.name, "rb"), content_type="application/dicom")
            response["Content-Disposition"] = f'attachment; filename="{instance.sop_instance_uid}.dcm"'
        response["ETag"] = etag
        response["Cache-Control"] = WADO_CACHE_CONTROL
        return response


def _wado_instance(request: Request) -> Instance:
    """Validate the WADO-URI parameters and find the instance among the user's projects."""
    params = request.query_params
    if params.get("requestType") != "WADO":
        raise ParseError("requestType must be WADO")
    missing = [key for key in ("studyUID", "seriesUID", "objectUID") if not params.get(key)]
    if missing:
        raise ParseError(f"missing parameter(s): {', '.join(missing)}")
    content_type = params.get("contentType", "application/dicom").replace(" ", "")
    if content_type not in WADO_CONTENT_TYPES:
        raise NotAcceptable("only contentType=application/dicom is served")
    instances = Instance.objects.filter(
        project_id__in=project_ids_for(request.user),
        sop_instance_uid=params["objectUID"],
        series__series_instance_uid=params["seriesUID"],
        series__study__study_instance_uid=params["studyUID"],
    )
    if params.get("project", "").isdigit():
        instances = instances.filter(project_id=int(params["project"]))
    instance = instances.order_by("project_id").first()
    if instance is None:
        raise NotFound("no such instance in your projects")
    return instance


wado_uri = WadoURIView.as_view()
