"""The exports page for ML engineers: choose a selection and a format, follow progress, download."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from accounts.permissions import project_ids_for
from imaging.models import Project

from . import services
from .models import ExportFormat
from .selection import MODALITY_GROUPS, QC_MODES, REVISION_MODES, SPLITS


@login_required
@ensure_csrf_cookie
def exports_page(request: HttpRequest) -> HttpResponse:
    """The form and the job list (the page talks to ``/api/exports/``); 403 without an export role."""
    projects = Project.objects.filter(pk__in=project_ids_for(request.user, services.EXPORT_ROLES))
    context = {"projects": projects, "formats": ExportFormat.choices, "modalities": list(MODALITY_GROUPS),
               "revision_modes": REVISION_MODES, "qc_modes": QC_MODES, "splits": SPLITS}
    if not projects:
        context["message"] = "Dataset exports are for ML engineers and project admins; you hold neither role in any project."
        return render(request, "exports/exports.html", context, status=403)
    return render(request, "exports/exports.html", context)
