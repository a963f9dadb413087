"""URLs of exports (API mounted under /api/, the page at the site root)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import views
from .api import ExportJobViewSet, LabelImportViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("exports/imports", LabelImportViewSet, basename="label-import")
router.register("exports", ExportJobViewSet, basename="exportjob")

urlpatterns = router.urls
page_urlpatterns = [path("exports/", views.exports_page, name="exports-page")]
