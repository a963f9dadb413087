"""URLs of the review stage, mounted under ``/api/review/``."""

from __future__ import annotations

from django.urls import path

from . import api

urlpatterns = [
    path("queue/", api.queue, name="review-queue-api"),
    path("tasks/<int:task_id>/", api.task_detail, name="review-task-api"),
    path("tasks/<int:task_id>/difference", api.difference, name="review-task-difference"),
    path("tasks/<int:task_id>/approve", api.approve, name="review-task-approve"),
    path("tasks/<int:task_id>/return", api.return_task, name="review-task-return"),
    path("tasks/<int:task_id>/edit-approve", api.edit_approve, name="review-task-edit-approve"),
    path("tasks/<int:task_id>/adjudicate", api.adjudicate, name="review-task-adjudicate"),
    path("policies/<int:project_id>/", api.policy, name="review-policy"),
]
