"""URLs of the annotator workflow, mounted under ``/api/annotation/`` (see docs/viewer-api.md)."""

from __future__ import annotations

from django.urls import path

from . import tasks_api

urlpatterns = [
    path("tasks/", tasks_api.queue, name="annotation-task-queue"),
    path("tasks/<int:task_id>/", tasks_api.task_detail, name="annotation-task"),
    path("tasks/<int:task_id>/claim", tasks_api.claim, name="annotation-task-claim"),
    path("tasks/<int:task_id>/release", tasks_api.release, name="annotation-task-release"),
    path("tasks/<int:task_id>/draft", tasks_api.draft, name="annotation-task-draft"),
    path("tasks/<int:task_id>/submit", tasks_api.submit, name="annotation-task-submit"),
    path("tasks/<int:task_id>/accept", tasks_api.accept, name="annotation-task-accept"),
    path("tasks/<int:task_id>/reject", tasks_api.reject, name="annotation-task-reject"),
]
