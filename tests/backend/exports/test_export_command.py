"""``manage.py export_dataset``: to a file (atomically) or as a stored job; clear errors."""

from __future__ import annotations

import json
import zipfile

import pytest
from django.core.management import CommandError, call_command

from exports.models import ExportJob, ExportStatus
from export_helpers import add_ct, add_xray

pytestmark = pytest.mark.django_db


def test_export_dataset_writes_a_file_or_a_stored_job(project, tmp_path, django_capture_on_commit_callbacks, capsys):
    revision = add_xray(project, django_capture_on_commit_callbacks)
    out = tmp_path / "out" / "alpha-png.zip"
    call_command("export_dataset", "--project", "alpha", "--format", "png", "--out", str(out))
    with zipfile.ZipFile(out) as archive:
        data = json.loads(archive.read("manifest.json"))
    assert [c["label"]["revision_id"] for c in data["cases"]] == [revision.pk]
    assert f"dataset hash {data['dataset_hash']}" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["alpha-png.zip"]  # no temporary file left
    call_command("export_dataset", "--project", "alpha", "--format", "nnunet", "--nnunet-id", "42")
    job = ExportJob.objects.get()
    assert job.status == ExportStatus.SUCCEEDED and job.origin == "command" and job.dataset_hash == data["dataset_hash"]


def test_export_dataset_refuses_bad_requests(project, tmp_path, django_capture_on_commit_callbacks):
    add_ct(project, django_capture_on_commit_callbacks, depth=3, size=16)
    with pytest.raises(CommandError, match="no project named 'nope'"):
        call_command("export_dataset", "--project", "nope", "--format", "png")
    with pytest.raises(CommandError, match="png is a 2D format for X-rays"):
        call_command("export_dataset", "--project", "alpha", "--format", "png", "--out", str(tmp_path / "x.zip"))
    with pytest.raises(CommandError, match="matches no case"):
        call_command("export_dataset", "--project", "alpha", "--format", "nifti", "--modality", "DX")
    assert not (tmp_path / "x.zip").exists() and not ExportJob.objects.exists()
