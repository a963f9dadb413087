"""Backend fixtures: isolated storage, eager Celery, users with roles, synthetic DICOM."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, User
from backend_factories import make_dicom, make_png
from config.celery import app as celery_app
from imaging.models import Project


@pytest.fixture(autouse=True)
def _isolated_storage(settings: Any, tmp_path: Path) -> Path:
    """Every test stores files in its own temporary folder."""
    settings.PLEURA_DATA_DIR = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "media")}},
    }
    return tmp_path / "media"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """PBKDF2 costs seconds per user on a busy CPU; tests do not need it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _celery_eager() -> Any:
    """Run tasks in-process in ordinary tests (the worker test uses a real worker)."""
    # The app reads Django settings with namespace CELERY: set the namespaced key.
    previous = celery_app.conf.task_always_eager
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = True
    yield
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = previous


@pytest.fixture
def dicom_factory() -> Callable[..., bytes]:
    return make_dicom


@pytest.fixture
def png_factory() -> Callable[..., bytes]:
    return make_png


@pytest.fixture
def project(db: Any) -> Project:
    return Project.objects.create(name="alpha")


@pytest.fixture
def other_project(db: Any) -> Project:
    return Project.objects.create(name="beta")


@pytest.fixture
def make_member(db: Any) -> Callable[[Project, str, str], User]:
    """Create a user with a role in a project."""

    def _make(project: Project, role: str, username: str | None = None) -> User:
        user = User.objects.create_user(username or f"{role}-{project.name}", password="pw-123456")
        Membership.objects.create(user=user, project=project, role=role)
        return user

    return _make


@pytest.fixture
def client_for() -> Callable[[User | None], APIClient]:
    """An API client authenticated as ``user`` (anonymous for ``None``)."""

    def _client(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return _client


def read_stored(path: Path) -> pydicom.Dataset:
    """Read a stored DICOM file."""
    return pydicom.dcmread(path)
