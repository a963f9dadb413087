"""Django admin: every model is registered and its list and change pages render."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.urls import reverse

from accounts.models import Membership, User
from backend_factories import make_dicom
from imaging.models import Instance, Patient, Project, Series, Study, Upload
from imaging.services import ingest
from imaging.sources import SourceFile

pytestmark = pytest.mark.django_db
MODELS = [User, Membership, Project, Patient, Study, Series, Instance, Upload]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_admin_pages(model: Any, client: Any, project: Project) -> None:
    assert admin.site.is_registered(model)
    superuser = User.objects.create_superuser("root", password="pw-123456")
    Membership.objects.create(user=superuser, project=project, role="admin")
    ingest(project, [SourceFile("a.dcm", make_dicom())])
    client.force_login(superuser)
    opts = model._meta
    assert client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")).status_code == 200
    obj = model.objects.first()
    assert client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])).status_code == 200
