"""Fixtures for proposal tests (helpers in ``proposal_helpers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.celery import app as celery_app
from modeling import services
from modeling.models import ModelVersion
from proposal_helpers import write_tiny_cxr_model


@pytest.fixture(autouse=True)
def _eager_tasks() -> Any:
    """Run tasks in-process. The app reads Django settings under the ``CELERY_`` namespace, so the
    namespaced key is the one that overrides ``CELERY_TASK_ALWAYS_EAGER`` from the environment."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = True
    yield
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = previous


@pytest.fixture(scope="session")
def tiny_cxr_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Card path of a tiny untrained X-ray network (real weights file, real card)."""
    return write_tiny_cxr_model(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def tiny_cxr_version(db: Any, tiny_cxr_card: Path) -> ModelVersion:
    """The tiny model registered and promoted to X-ray champion."""
    from ml import ModelCard

    (version,) = services.sync_registry([ModelCard.from_file(tiny_cxr_card)])
    return services.promote(version)


@pytest.fixture
def ct_version_without_weights(db: Any) -> ModelVersion:
    """A CT champion whose weights are missing: every CT proposal takes the classical fallback."""
    version, _ = ModelVersion.objects.get_or_create(
        name="ct-missing-weights", defaults={"modality": "ct", "weights_file": "ml/weights/ct-missing-weights.pt",
                                             "sha256": "0" * 64, "architecture": "unet"})
    return services.promote(version)
