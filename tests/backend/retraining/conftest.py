"""Fixtures of the retraining tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _datasets_in_tmp(settings: Any, tmp_path: Any) -> None:
    """Dataset versions are exported under the test's temporary folder."""
    settings.PLEURA_DATASETS_DIR = str(tmp_path / "datasets")


@pytest.fixture
def tiny_cxr_version(db: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny untrained X-ray network registered and promoted to champion (real weights and card)."""
    from ml import ModelCard
    from modeling import services
    from proposal_helpers import write_tiny_cxr_model

    card = write_tiny_cxr_model(tmp_path_factory.mktemp("weights"))
    (version,) = services.sync_registry([ModelCard.from_file(card)])
    return services.promote(version)
