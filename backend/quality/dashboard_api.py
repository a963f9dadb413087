"""Dashboard API: ``/api/quality/dashboard/<project>/`` (JSON of every figure) and ``.../<figure>.csv``."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Membership, Role
from accounts.permissions import has_role, project_ids_for

from . import dashboard

logger = logging.getLogger(__name__)

#: Who sees a project's dashboard.
DASHBOARD_ROLES: frozenset[str] = frozenset({Role.REVIEWER, Role.ADMIN, Role.ML_ENGINEER})

FILTER_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATE, description="first day (inclusive)"),
    OpenApiParameter("to", OpenApiTypes.DATE, description="last day (inclusive)"),
    OpenApiParameter("modality", str, enum=["cxr", "ct"]),
    OpenApiParameter("annotator", int, description="user id"),
    OpenApiParameter("model_version", int, description="model version id"),
]


def _allowed(request: Request, project_id: int) -> Response | None:
    """404 for non-members (no existence leak), 403 for members whose role does not see dashboards."""
    if not project_ids_for(request.user).filter(project_id=project_id).exists():
        return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    if not has_role(request.user, project_id, DASHBOARD_ROLES):
        return Response({"detail": "Dashboards are for the project's reviewers, admins and ML engineers."},
                        status=status.HTTP_403_FORBIDDEN)
    return None


def filter_options(project_id: int) -> dict[str, Any]:
    """Choices of the filter form: the project's annotators and the model versions of its proposals."""
    from annotation.models import MaskRevision

    annotators = list(Membership.objects.filter(project_id=project_id).order_by("user__username")
                      .values_list("user_id", "user__username"))
    models = list(MaskRevision.objects.filter(project_id=project_id, model_version__isnull=False)
                  .values_list("model_version_id", "model_version__name").distinct().order_by("model_version__name"))
    return {"annotators": annotators, "model_versions": models}


@extend_schema(operation_id="quality_dashboard", parameters=[*FILTER_PARAMETERS, OpenApiParameter(
    "figure", str, many=True, description="only these figures")], responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
def dashboard_json(request: Request, project_id: int) -> Response:
    """Every figure of the project's quality dashboard (tables with chart hints), under the filters."""
    refused = _allowed(request, project_id)
    if refused is not None:
        return refused
    try:
        flt = dashboard.DashboardFilter.parse(project_id, request.query_params)
        figures = dashboard.cached_figures(flt, request.query_params.getlist("figure") or None)
    except dashboard.DashboardFilterError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    options = dashboard.cached(f"options:{project_id}", lambda: filter_options(project_id))
    return Response({"project": project_id, "figures": figures, "options": options})


@extend_schema(operation_id="quality_dashboard_csv", parameters=FILTER_PARAMETERS, responses={200: OpenApiTypes.BINARY})
@api_view(["GET"])
def dashboard_csv(request: Request, project_id: int, figure: str) -> HttpResponse | Response:
    """One figure's table as CSV (the same numbers as the chart)."""
    refused = _allowed(request, project_id)
    if refused is not None:
        return refused
    try:
        flt = dashboard.DashboardFilter.parse(project_id, request.query_params)
        (table,) = dashboard.figures(flt, [figure])
    except dashboard.DashboardFilterError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    return figure_csv(table, f"project-{project_id}-{table.name}.csv")


def figure_csv(table: dashboard.Figure, filename: str) -> HttpResponse:
    """A figure's table as a CSV download."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
