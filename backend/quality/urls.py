"""URLs of quality (mounted under /api/)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import dashboard_api, longitudinal_api
from .api import QCSummaryViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("qc", QCSummaryViewSet, basename="qcsummary")

urlpatterns = [
    *router.urls,
    path("quality/dashboard/<int:project_id>/", dashboard_api.dashboard_json, name="quality-dashboard"),
    path("quality/dashboard/<int:project_id>/<slug:figure>.csv", dashboard_api.dashboard_csv,
         name="quality-dashboard-csv"),
    path("quality/patients/<int:patient_id>/lungs/", longitudinal_api.patient_lungs, name="quality-patient-lungs"),
    path("quality/patients/<int:patient_id>/lungs/<slug:figure>.csv", longitudinal_api.patient_lungs_csv,
         name="quality-patient-lungs-csv"),
]
