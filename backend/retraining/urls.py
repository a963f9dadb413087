"""URLs of retraining (mounted under /api/retraining/)."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from .api import ChampionViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("champions", ChampionViewSet, basename="championchange")

urlpatterns = router.urls
