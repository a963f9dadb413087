"""URLs of modeling (mounted under /api/)."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from .api import ModelVersionViewSet, ProposalJobViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("models", ModelVersionViewSet, basename="modelversion")
router.register("proposals", ProposalJobViewSet, basename="proposaljob")

urlpatterns = router.urls
