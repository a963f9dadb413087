"""URLs of retraining (mounted under /api/retraining/)."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from .api import ChampionViewSet, TrainingRunViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("champions", ChampionViewSet, basename="championchange")
router.register("runs", TrainingRunViewSet, basename="trainingrun")

urlpatterns = router.urls
