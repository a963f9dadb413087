"""Django admin for the later apps: registry, jobs, lineage, tasks and QC pages render; lineage is read-only."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.urls import reverse

from accounts.models import Membership, User
from annotation.models import AnnotationTask, Draft, MaskRevision, TaskAction
from imaging.services import ingest
from imaging.sources import SourceFile
from modeling.models import ModelVersion, ProposalJob, TrainingRun
from quality.models import QCFlag, QCSummary

from proposal_helpers import xray_png

MODELS = [ModelVersion, TrainingRun, ProposalJob, MaskRevision, AnnotationTask, Draft, TaskAction, QCSummary, QCFlag]


@pytest.fixture
def admin_client_with_proposal(client: Any, project: Any, tiny_cxr_version: ModelVersion,
                               django_capture_on_commit_callbacks: Any) -> Any:
    """A logged-in superuser, and one X-ray with its model proposal (revision, QC, task)."""
    with django_capture_on_commit_callbacks(execute=True):
        ingest(project, [SourceFile("chest.png", xray_png())])
    superuser = User.objects.create_superuser("root", password="pw-123456")
    Membership.objects.create(user=superuser, project=project, role="admin")
    client.force_login(superuser)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_admin_pages_render(model: Any, admin_client_with_proposal: Any) -> None:
    assert admin.site.is_registered(model)
    opts = model._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    assert admin_client_with_proposal.get(changelist).status_code == 200
    obj = model.objects.first()
    if obj is not None:
        change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        assert admin_client_with_proposal.get(change).status_code == 200


@pytest.mark.django_db
def test_revisions_cannot_be_changed_or_deleted_in_the_admin(admin_client_with_proposal: Any) -> None:
    revision = MaskRevision.objects.get()
    delete = reverse("admin:annotation_maskrevision_delete", args=[revision.pk])
    assert admin_client_with_proposal.post(delete, {"post": "yes"}).status_code == 403
    change = reverse("admin:annotation_maskrevision_change", args=[revision.pk])
    admin_client_with_proposal.post(change, {"note": "edited"})
    assert MaskRevision.objects.get(pk=revision.pk).note == revision.note
    assert MaskRevision.objects.count() == 1
