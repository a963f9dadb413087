"""URLs of the workbench pages (mounted at the site root)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("queue/", views.queue, name="queue"),
    path("tasks/<int:task_id>/", views.task_page, name="task-page"),
    path("review/", views.review_queue, name="review-queue"),
    path("projects/<int:project_id>/dashboard/", views.dashboard, name="dashboard"),
    path("patients/<int:patient_id>/lungs/", views.patient_lungs, name="patient-lungs"),
    path("review/tasks/<int:task_id>/", views.review_page, name="review-page"),
]
