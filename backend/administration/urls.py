"""URLs of the administration pages (mounted at ``/manage/``)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.project_list, name="manage-projects"),
    path("new/", views.project_new, name="manage-project-new"),
    path("<int:project_id>/", views.project_page, name="manage-project"),
]
