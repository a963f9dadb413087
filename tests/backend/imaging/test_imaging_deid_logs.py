"""Logs carry no PHI and cannot be forged: upload names are logged as a keyed reference, and any
user-supplied text left in a line is escaped (``config.logsafe``)."""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from backend_factories import make_dicom
from config.logsafe import CONTROL_CHARACTERS, escape, file_ref

pytestmark = pytest.mark.django_db

PATIENT = "QUIXOTE^JOHNATHAN"
FORGED = "2026-12-08 00:00:00,000 ERROR django.security: forged line"
MEMBER = f"{PATIENT}\n{FORGED}\r\x1b[2K.dcm"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def upload(project: Any, make_member: Callable, client_for: Callable) -> Callable[[str, bytes], Any]:
    client = client_for(make_member(project, "reviewer"))

    def _upload(name: str, data: bytes) -> Any:
        return client.post("/api/uploads/", {"project": project.pk, "files": [SimpleUploadedFile(name, data)]},
                           format="multipart")

    return _upload


def assert_clean(caplog: pytest.LogCaptureFixture) -> None:
    """No record names the patient, none spans two lines, no line of the output is the forged one."""
    assert caplog.records, "expected the upload to log something"
    for record in caplog.records:
        message = record.getMessage()
        assert "johnathan" not in message.lower() and "quixote" not in message.lower(), message
        assert not CONTROL_CHARACTERS.search(message), message
    assert not any(line.startswith(FORGED) or "forged line" in line for line in caplog.text.splitlines())


def test_rejected_zip_member_with_newline_and_patient_name(upload: Callable, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = upload("DOE_JOHNATHAN_CT.zip", _zip({MEMBER: b"not an image" * 20}))
    assert response.status_code == 415, response.content
    assert response.json()["file"] == f"DOE_JOHNATHAN_CT.zip/{MEMBER}"  # the uploader is told which file
    assert_clean(caplog)
    assert file_ref(f"DOE_JOHNATHAN_CT.zip/{MEMBER}") in caplog.text  # the reference an operator can look up


def test_accepted_zip_member_named_after_patient(upload: Callable, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = upload("QUIXOTE_JOHNATHAN.zip", _zip({MEMBER: make_dicom(patient_name=PATIENT)}))
    assert response.status_code == 201, response.content
    assert_clean(caplog)


def test_import_command_escapes_names(tmp_path: Path, project: Any, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / f"x\n{FORGED}.txt").write_bytes(b"not an image" * 20)
    with pytest.raises(CommandError):
        call_command("import_studies", str(folder), "--project", project.name, "--no-progress")
    err = capsys.readouterr().err
    assert "rejected" in err and "\\n" + FORGED in err
    assert not any(line.startswith(FORGED) for line in err.splitlines())


def test_escape_and_file_ref() -> None:
    assert escape("a\nb\r\x1b[31m\u2028\x00") == "a\\nb\\r\\x1b[31m\\u2028\\x00"
    assert escape("x" * 300).endswith("…") and len(escape("x" * 300)) == 201
    assert escape("Ünïcode ok") == "Ünïcode ok"
    ref = file_ref("DOE_JOHNATHAN.dcm")
    assert ref == file_ref("DOE_JOHNATHAN.dcm") != file_ref("DOE_JOHNATHAN2.dcm")
    assert ref.startswith("file-") and len(ref) == 17 and "DOE" not in ref
