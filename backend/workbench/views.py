"""Annotator pages: log in, "my queue", the viewer page. Thin over :mod:`annotation.workflow`."""

from __future__ import annotations

import logging

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import ensure_csrf_cookie

from accounts.permissions import has_role
from annotation import workflow
from annotation.review import services as review_services

from .assets import ViewerBundleMissing, entry_assets

logger = logging.getLogger(__name__)


class LoginView(auth_views.LoginView):
    """Django's login form in the workbench's look; signed-in users go straight to their queue."""

    template_name = "workbench/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    """POST-only log out, back to the login page."""


@login_required
def queue(request: HttpRequest) -> HttpResponse:
    """Tasks of my projects, assigned to me or unclaimed: QC-flagged and least confident first."""
    items = workflow.queue_for(request.user)
    kept = workflow.untold_kept_drafts(request.user)
    return render(request, "workbench/queue.html", {"items": items, "kept_drafts": kept})


@login_required
@ensure_csrf_cookie
def task_page(request: HttpRequest, task_id: int) -> HttpResponse:
    """The viewer page of one task (404 outside the user's projects)."""
    task = get_object_or_404(workflow.tasks_for(request.user), pk=task_id)
    latest = workflow.latest_revision(task)
    try:
        script, styles = entry_assets()
    except ViewerBundleMissing as exc:
        logger.error("viewer page without bundle: %s", exc)
        return render(request, "workbench/error.html", {"message": str(exc)}, status=503)
    context = {
        "task": task,
        "script": script,
        "styles": styles,
        "can_edit": has_role(request.user, task.project_id, workflow.ANNOTATE_ROLES),
        "page_options": {"taskId": task.pk, "queueUrl": "/queue/", "revisionId": latest.pk if latest else None},
    }
    return render(request, "workbench/task.html", context)


def _bundle_or_error(request: HttpRequest) -> tuple[str, tuple[str, ...]] | HttpResponse:
    try:
        return entry_assets()
    except ViewerBundleMissing as exc:
        logger.error("page without viewer bundle: %s", exc)
        return render(request, "workbench/error.html", {"message": str(exc)}, status=503)


@login_required
def review_queue(request: HttpRequest) -> HttpResponse:
    """Tasks waiting for review in the projects where I review: QC-flagged first, then the most edited."""
    from imaging.models import Project
    from quality.dashboard_api import DASHBOARD_ROLES

    from accounts.permissions import project_ids_for

    items = review_services.review_queue(request.user)
    projects = Project.objects.filter(pk__in=project_ids_for(request.user, DASHBOARD_ROLES))
    return render(request, "workbench/review_queue.html", {"items": items, "projects": projects})


@login_required
@ensure_csrf_cookie
def review_page(request: HttpRequest, task_id: int) -> HttpResponse:
    """The review page of one task: final mask, proposal outline, difference, approve / return / edit."""
    task = get_object_or_404(workflow.tasks_for(request.user), pk=task_id)
    if not has_role(request.user, task.project_id, review_services.REVIEW_ROLES):
        return render(request, "workbench/error.html",
                      {"message": "Only the project's reviewers and admins can review tasks."}, status=403)
    assets = _bundle_or_error(request)
    if isinstance(assets, HttpResponse):
        return assets
    script, styles = assets
    return render(request, "workbench/review_task.html", {
        "task": task, "script": script, "styles": styles,
        "page_options": {"taskId": task.pk, "queueUrl": "/review/"}})


@login_required
def dashboard(request: HttpRequest, project_id: int) -> HttpResponse:
    """The quality dashboard of a project (figures drawn by the bundle from the dashboard API)."""
    from imaging.models import Project
    from quality.dashboard import DashboardFilter, DashboardFilterError
    from quality.dashboard_api import DASHBOARD_ROLES, filter_options

    from accounts.permissions import project_ids_for

    project = get_object_or_404(Project.objects.filter(pk__in=project_ids_for(request.user)), pk=project_id)
    if not has_role(request.user, project.pk, DASHBOARD_ROLES):
        return render(request, "workbench/error.html",
                      {"message": "Dashboards are for the project's reviewers, admins and ML engineers."}, status=403)
    try:
        DashboardFilter.parse(project.pk, request.GET)
    except DashboardFilterError as exc:
        return render(request, "workbench/error.html", {"message": str(exc)}, status=400)
    assets = _bundle_or_error(request)
    if isinstance(assets, HttpResponse):
        return assets
    script, styles = assets
    return render(request, "workbench/dashboard.html", {
        "project": project, "script": script, "styles": styles, "options": filter_options(project.pk),
        "filters": request.GET, "page_options": {"projectId": project.pk, "query": request.GET.urlencode()}})


@login_required
def patient_lungs(request: HttpRequest, patient_id: int) -> HttpResponse:
    """A patient's lung volumes (CT) or areas (X-ray) per study date, with the trend chart and tables."""
    from imaging.models import Patient

    from accounts.permissions import project_ids_for

    patient = get_object_or_404(Patient.objects.filter(project_id__in=project_ids_for(request.user)), pk=patient_id)
    assets = _bundle_or_error(request)
    if isinstance(assets, HttpResponse):
        return assets
    script, styles = assets
    base = f"/api/quality/patients/{patient.pk}/lungs/"
    return render(request, "workbench/patient_lungs.html", {
        "patient": patient, "script": script, "styles": styles, "page_options": {"dataUrl": base, "csvBase": base}})
