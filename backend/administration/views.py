"""Administration pages under ``/manage/``: thin over :mod:`administration.services`."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from accounts.models import Membership
from accounts.permissions import project_ids_for
from annotation.models import AnnotationTask, TaskStatus
from imaging.models import Project

from . import services
from .forms import AssignForm, MemberForm, NewProjectForm, ProjectSettingsForm

logger = logging.getLogger(__name__)


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    """The projects I administer (site staff: all, and a link to create one)."""
    return render(request, "administration/projects.html", {"projects": services.managed_projects(request.user)})


@login_required
@require_http_methods(["GET", "POST"])
def project_new(request: HttpRequest) -> HttpResponse:
    """Create a project (site staff)."""
    if not request.user.is_staff:
        return render(request, "workbench/error.html", {"message": "Only site staff can create projects."}, status=403)
    form = NewProjectForm(request.POST or None, initial={"review_fraction": 1.0, "double_read_fraction": 0.0,
                                                           "agreement_threshold": 0.9, "modality": "mixed"})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            project = services.create_project(
                request.user, data["name"], description=data["description"], modality=data["modality"],
                deidentify=data["deidentify"], **{k: data[k] for k in services.POLICY_FIELDS})
        except services.AdministrationError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Project {project.name} created; you are its admin.")
            return redirect("manage-project", project_id=project.pk)
    return render(request, "administration/project_new.html", {"form": form}, status=400 if form.errors else 200)


def _managed(request: HttpRequest, project_id: int) -> Project:
    """The project if the user administers it; 404 for non-members (no existence leak)."""
    project = get_object_or_404(Project.objects.filter(pk__in=project_ids_for(request.user)), pk=project_id)
    if not services.managed_projects(request.user).filter(pk=project.pk).exists():
        raise PermissionError
    return project


@login_required
@require_http_methods(["GET", "POST"])
def project_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Settings, members, assignment, leases and audit log of one project (its admins)."""
    try:
        project = _managed(request, project_id)
    except PermissionError:
        return render(request, "workbench/error.html",
                      {"message": "Only the project's admins can manage it."}, status=403)
    settings_form = ProjectSettingsForm(initial=services.settings_of(project))
    member_form, assign_form = MemberForm(), AssignForm()
    status = 200
    if request.method == "POST":
        action = request.POST.get("action", "")
        handler = _ACTIONS.get(action)
        if handler is None:
            raise Http404(f"unknown action {action!r}")
        try:
            outcome = handler(request, project)
        except services.AdministrationError as exc:
            messages.error(request, str(exc))
            status = 400
        else:
            if isinstance(outcome, HttpResponse):
                return outcome
            if outcome is not None:  # a form with errors: show it again
                status = 400
                settings_form = outcome if isinstance(outcome, ProjectSettingsForm) else settings_form
                member_form = outcome if isinstance(outcome, MemberForm) else member_form
                assign_form = outcome if isinstance(outcome, AssignForm) else assign_form
            else:
                return redirect("manage-project", project_id=project.pk)
    members = Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    open_tasks = (AnnotationTask.objects.filter(project=project, status__in=[TaskStatus.OPEN, TaskStatus.IN_PROGRESS,
                                                                             TaskStatus.RETURNED])
                  .select_related("assignee").order_by("-priority", "id")[:200])
    context = {"project": project, "settings_form": settings_form, "member_form": member_form,
               "assign_form": assign_form, "members": members, "open_tasks": open_tasks,
               "leases": services.leases(project), "audit": services.audit_log(project)}
    return render(request, "administration/project.html", context, status=status)


def _save_settings(request: HttpRequest, project: Project) -> ProjectSettingsForm | None:
    form = ProjectSettingsForm(request.POST)
    if not form.is_valid():
        return form
    data = form.cleaned_data
    try:
        changed = services.update_project(request.user, project, {k: data[k] for k in form.SETTINGS},
                                          confirm_deidentify=data["confirm_deidentify"])
    except services.ConfirmationRequired as exc:
        form.add_error("confirm_deidentify", str(exc))
        return form
    messages.success(request, f"Saved: {', '.join(changed) or 'nothing changed'}.")
    return None


def _set_member(request: HttpRequest, project: Project) -> MemberForm | None:
    form = MemberForm(request.POST)
    if not form.is_valid():
        return form
    services.set_member(request.user, project, form.cleaned_data["username"], form.cleaned_data["role"])
    messages.success(request, f"{form.cleaned_data['username']} is now {form.cleaned_data['role']}.")
    return None


def _remove_member(request: HttpRequest, project: Project) -> None:
    user_id = request.POST.get("user", "")
    if not user_id.isdigit():
        raise services.AdministrationError("Choose a member to remove.")
    services.remove_member(request.user, project, int(user_id))
    messages.success(request, "Member removed.")


def _assign(request: HttpRequest, project: Project) -> AssignForm | None:
    form = AssignForm(request.POST)
    if not form.is_valid():
        return form
    name = form.cleaned_data["assignee"].strip()
    assignee = get_user_model().objects.filter(username=name).first() if name else None
    if name and assignee is None:
        raise services.AdministrationError(f"There is no user named {name!r}.")
    count = services.assign_tasks(request.user, project, form.cleaned_data["tasks"], assignee,
                                  form.cleaned_data["priority"])
    messages.success(request, f"{count} task(s) assigned to {name or 'nobody'} with priority {form.cleaned_data['priority']}.")
    return None


def _release(request: HttpRequest, project: Project) -> None:
    task_id = request.POST.get("task", "")
    if not task_id.isdigit():
        raise services.AdministrationError("Choose a task.")
    services.release_lease(request.user, project, int(task_id))
    messages.success(request, f"Task {task_id} released.")


_ACTIONS: dict[str, Any] = {"settings": _save_settings, "member": _set_member, "remove": _remove_member,
                            "assign": _assign, "release": _release}
