"""URLs of quality (mounted under /api/)."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from .api import QCSummaryViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("qc", QCSummaryViewSet, basename="qcsummary")

urlpatterns = router.urls
