"""Management commands: setup_demo (idempotent) and import_studies (progress, summary, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Membership, User
from backend_factories import make_dicom, make_png
from imaging.models import Project, Series

pytestmark = pytest.mark.django_db


def test_setup_demo_is_idempotent(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("PLEURA_ADMIN_PASSWORD", raising=False)
    call_command("setup_demo")
    call_command("setup_demo")
    out = capsys.readouterr().out
    assert "http://" in out and "admin / pleura-admin" in out
    assert User.objects.filter(username="admin").count() == 1 and Project.objects.filter(name="demo").count() == 1
    admin = User.objects.get(username="admin")
    assert admin.check_password("pleura-admin") and admin.is_superuser
    assert Membership.objects.get(user=admin).role == "admin"
    monkeypatch.setenv("PLEURA_ADMIN_PASSWORD", "s3cret-pass")
    call_command("setup_demo")
    admin.refresh_from_db()
    assert admin.check_password("s3cret-pass")


def test_import_studies_folder_and_png(tmp_path: Path, project: Project, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "in" / "patient"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.dcm").write_bytes(make_dicom(instance_number=i + 1, z=float(i)))
    (tmp_path / "in" / "chest.png").write_bytes(make_png())
    call_command("import_studies", str(tmp_path / "in"), "--project", project.name, "--no-progress")
    out = capsys.readouterr().out
    assert "4 instances in 2 series" in out and "0 upload(s) rejected" in out
    assert sorted(Series.objects.values_list("modality", flat=True)) == ["CT", "DX"]


def test_import_studies_reports_bad_files_and_continues(tmp_path: Path, project: Project, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "notes.txt").write_text("not dicom")
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "a.dcm").write_bytes(make_dicom())
    with pytest.raises(CommandError, match="1 upload"):
        call_command("import_studies", str(tmp_path / "bad"), str(tmp_path / "good"), "--project", project.name, "--no-progress")
    captured = capsys.readouterr()
    assert "notes.txt" in captured.err and "not_dicom" in captured.err
    assert Series.objects.count() == 1


def test_import_studies_unknown_project(tmp_path: Path, db: object) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_studies", str(tmp_path), "--project", "nope")
    call_command("import_studies", str(tmp_path), "--project", "made", "--create-project", "--no-progress")
    assert Project.objects.filter(name="made").exists()
