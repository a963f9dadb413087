"""URLs of quality (mounted under /api/)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import dashboard_api
from .api import QCSummaryViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("qc", QCSummaryViewSet, basename="qcsummary")

urlpatterns = [
    *router.urls,
    path("quality/dashboard/<int:project_id>/", dashboard_api.dashboard_json, name="quality-dashboard"),
    path("quality/dashboard/<int:project_id>/<slug:figure>.csv", dashboard_api.dashboard_csv,
         name="quality-dashboard-csv"),
]
