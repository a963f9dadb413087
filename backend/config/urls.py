"""URL configuration: REST API under /api/, WADO-URI at /wado, admin at /admin/."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from accounts.views import MembershipViewSet, me
from imaging.views import (
    InstanceViewSet,
    PatientViewSet,
    ProjectViewSet,
    SeriesViewSet,
    StudyViewSet,
    UploadViewSet,
    wado_uri,
)

router = DefaultRouter()
router.register("projects", ProjectViewSet)
router.register("memberships", MembershipViewSet)
router.register("patients", PatientViewSet)
router.register("studies", StudyViewSet)
router.register("series", SeriesViewSet)
router.register("instances", InstanceViewSet)
router.register("uploads", UploadViewSet)

urlpatterns = [
    path("", RedirectView.as_view(url="/queue/", permanent=False)),
    path("", include("workbench.urls")),
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("api/", include("modeling.urls")),
    path("api/", include("annotation.urls")),
    path("api/annotation/", include("annotation.task_urls")),
    path("api/", include("quality.urls")),
    path("api/me/", me, name="me"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/auth/token/", obtain_auth_token, name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("wado", wado_uri, name="wado"),
]
