"""Longitudinal lung measures API: ``/api/quality/patients/<id>/lungs/`` (JSON) and ``.../<figure>.csv``."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import project_ids_for
from imaging.models import Patient

from . import longitudinal
from .dashboard_api import figure_csv


def _patient(request: Request, patient_id: int) -> Patient:
    """The patient if the caller is a member of their project (404 otherwise: no existence leak)."""
    return get_object_or_404(Patient.objects.filter(project_id__in=project_ids_for(request.user)), pk=patient_id)


@extend_schema(operation_id="quality_patient_lungs", responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
def patient_lungs(request: Request, patient_id: int) -> Response:
    """Per study date: right/left/total lung volume (CT, mL) or projected area (X-ray, cm²), mean HU and
    emphysema index (CT), and the change since the first study, from each study's curated (else latest) mask."""
    patient = _patient(request, patient_id)
    return Response({"patient": patient.pk, "pseudonym": patient.pseudonym, "project": patient.project_id,
                     "figures": [f.as_dict() for f in longitudinal.figures(patient)]})


@extend_schema(operation_id="quality_patient_lungs_csv", responses={200: OpenApiTypes.BINARY})
@api_view(["GET"])
def patient_lungs_csv(request: Request, patient_id: int, figure: str) -> HttpResponse | Response:
    """One modality's table as CSV."""
    patient = _patient(request, patient_id)
    table = next((f for f in longitudinal.figures(patient) if f.name == figure), None)
    if table is None:
        return Response({"detail": f"no figure {figure!r} for this patient; use lungs_ct or lungs_cxr"}, status=404)
    return figure_csv(table, f"patient-{patient.pk}-{table.name}.csv")
