"""URLs of annotation (mounted under /api/)."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from .api import MaskRevisionViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("revisions", MaskRevisionViewSet, basename="maskrevision")

urlpatterns = router.urls
