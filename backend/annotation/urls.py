"""URLs of annotation (mounted under /api/)."""

from __future__ import annotations

from django.urls import path
from django.views.decorators.gzip import gzip_page
from rest_framework.routers import DefaultRouter

from .api import MaskRevisionViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("revisions", MaskRevisionViewSet, basename="maskrevision")

urlpatterns = [
    *router.urls,
    # the viewer's contract (docs/viewer-api.md): the same raw label map under /api/annotation/
    path("annotation/revisions/<int:pk>/mask", gzip_page(MaskRevisionViewSet.as_view({"get": "labelmap"})),
         name="annotation-revision-mask"),
]
