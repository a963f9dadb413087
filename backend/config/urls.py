"""URL configuration: REST API under /api/, WADO-URI at /wado, admin at /admin/."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import APIRootView, DefaultRouter

from accounts.views import AuditEntryViewSet, MembershipViewSet, ObtainAuthTokenView, me
from exports.urls import page_urlpatterns as export_pages
from imaging.views import (
    InstanceViewSet,
    PatientViewSet,
    ProjectViewSet,
    SeriesViewSet,
    StudyViewSet,
    UploadViewSet,
    wado_uri,
)


class PleuraAPIRoot(APIRootView):
    """The Pleura REST API: imaging data, models and proposals, mask revisions, QC, annotation tasks.

    The interactive documentation is at `/api/docs/`, the OpenAPI schema at `/api/schema/`.
    """


# one root for the routers of every app (each app's own router has no root view)
API_ROOT = {
    "projects": "project-list", "memberships": "membership-list", "patients": "patient-list",
    "studies": "study-list", "series": "series-list", "instances": "instance-list", "uploads": "upload-list",
    "models": "modelversion-list", "proposals": "proposaljob-list", "revisions": "maskrevision-list",
    "qc": "qcsummary-list", "annotation/tasks": "annotation-task-queue", "review/queue": "review-queue-api",
    "exports": "exportjob-list", "audit": "auditentry-list", "me": "me",
    "schema": "schema", "docs": "api-docs",
}

router = DefaultRouter()
router.include_root_view = False
router.register("projects", ProjectViewSet)
router.register("memberships", MembershipViewSet)
router.register("patients", PatientViewSet)
router.register("studies", StudyViewSet)
router.register("series", SeriesViewSet)
router.register("instances", InstanceViewSet)
router.register("uploads", UploadViewSet)
router.register("audit", AuditEntryViewSet)

urlpatterns = [
    path("", RedirectView.as_view(url="/queue/", permanent=False)),
    path("", include("workbench.urls")),
    path("", include(export_pages)),
    path("manage/", include("administration.urls")),
    path("admin/", admin.site.urls),
    path("api/", PleuraAPIRoot.as_view(api_root_dict=API_ROOT), name="api-root"),
    path("api/", include(router.urls)),
    path("api/", include("modeling.urls")),
    path("api/", include("annotation.urls")),
    path("api/annotation/", include("annotation.task_urls")),
    path("api/review/", include("annotation.review.urls")),
    path("api/", include("quality.urls")),
    path("api/", include("exports.urls")),
    path("api/retraining/", include("retraining.urls")),
    path("api/me/", me, name="me"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/auth/token/", ObtainAuthTokenView.as_view(), name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # the split view serves its script as a file: no inline script for the Content-Security-Policy
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("wado", wado_uri, name="wado"),
]
