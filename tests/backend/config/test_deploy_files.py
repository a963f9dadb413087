"""The container set-up never creates or resets an account with a known password, and runs the
documented commands with the import path from the installed project (no per-file path tricks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY_FILES = ["docker-compose.yml", "deploy/entrypoint.sh", "deploy/Dockerfile"]


@pytest.mark.parametrize("name", DEPLOY_FILES)
def test_no_default_account_on_start(name: str) -> None:
    text = (REPO / name).read_text()
    for forbidden in ("setup_demo", "pleura-admin", "createsuperuser --noinput", "Token "):
        assert forbidden not in text, f"{name} mentions {forbidden!r}"


def test_compose_processes_run_the_documented_commands_from_the_image_root() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert services["web"]["command"][:2] == ["gunicorn", "config.wsgi"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "config", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    for name in ("web", "worker", "beat"):
        assert "working_dir" not in services[name]
        assert "--chdir" not in services[name]["command"]
    assert "PLEURA_ADMIN_PASSWORD" not in services["web"]["environment"]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "PYTHONPATH" not in dockerfile and "pip install --no-deps -e ." in dockerfile
