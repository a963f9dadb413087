"""Fixtures of the retraining tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _datasets_in_tmp(settings: Any, tmp_path: Any) -> None:
    """Dataset versions are exported under the test's temporary folder; small fixed split fractions."""
    settings.PLEURA_DATASETS_DIR = str(tmp_path / "datasets")
