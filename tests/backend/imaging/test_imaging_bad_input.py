"""Bad input: each case answers a clear 4xx JSON naming the file; nothing is half-stored."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from backend_factories import ORIGINAL_PATIENT_ID, make_dicom
from imaging.models import Instance, Patient, Series, Study, Upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def uploader(project: Any, make_member: Callable, client_for: Callable) -> Callable[..., Any]:
    client = client_for(make_member(project, "reviewer"))

    def _upload(*files: tuple[str, bytes]) -> Any:
        payload = {"project": project.pk, "files": [SimpleUploadedFile(name, data) for name, data in files]}
        return client.post("/api/uploads/", payload, format="multipart")

    return _upload


def stored_files(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def assert_rejected(response: Any, status: int, code: str, file_name: str, media: Path) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert body["file"] == file_name
    assert file_name in body["detail"]
    assert ORIGINAL_PATIENT_ID not in response.content.decode()
    assert (Upload.objects.count(), Instance.objects.count(), Series.objects.count(),
            Study.objects.count(), Patient.objects.count()) == (0, 0, 0, 0, 0)
    assert stored_files(media) == []


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_non_dicom_file(uploader: Callable, _isolated_storage: Path) -> None:
    response = uploader(("notes.txt", b"this is not an image at all" * 10))
    assert_rejected(response, 415, "not_dicom", "notes.txt", _isolated_storage)


def test_truncated_dicom(uploader: Callable, _isolated_storage: Path) -> None:
    data = make_dicom(rows=64, columns=64)
    response = uploader(("cut.dcm", data[:-500]))
    assert_rejected(response, 400, "truncated_dicom", "cut.dcm", _isolated_storage)


def test_dicom_without_pixel_data(uploader: Callable, _isolated_storage: Path) -> None:
    response = uploader(("nopix.dcm", make_dicom(pixel_data=False)))
    assert_rejected(response, 400, "no_pixel_data", "nopix.dcm", _isolated_storage)


def test_unsupported_transfer_syntax(uploader: Callable, _isolated_storage: Path) -> None:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(make_dicom()))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8not-really-jpeg-ls\xff\xd9"])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = uploader(("jls.dcm", buffer.getvalue()))
    assert_rejected(response, 415, "unsupported_transfer_syntax", "jls.dcm", _isolated_storage)


def test_zero_size_image(uploader: Callable, _isolated_storage: Path) -> None:
    response = uploader(("empty-image.dcm", make_dicom(rows=0, columns=0)))
    assert_rejected(response, 400, "zero_size_image", "empty-image.dcm", _isolated_storage)


def test_empty_file(uploader: Callable, _isolated_storage: Path) -> None:
    response = uploader(("zero.dcm", b""))
    assert_rejected(response, 400, "empty_file", "zero.dcm", _isolated_storage)


def test_zip_with_parent_path(uploader: Callable, _isolated_storage: Path, tmp_path: Path) -> None:
    archive = zip_bytes({"ok.dcm": make_dicom(), "../evil.dcm": make_dicom(sop_uid="1.2.3.4.5")})
    response = uploader(("series.zip", archive))
    assert_rejected(response, 400, "unsafe_archive_path", "series.zip/../evil.dcm", _isolated_storage)
    assert not (tmp_path / "evil.dcm").exists()


def test_zip_bomb_ratio(uploader: Callable, _isolated_storage: Path) -> None:
    archive = zip_bytes({"bomb.dcm": b"\0" * (8 * 1024 * 1024)})
    assert len(archive) < 100_000
    response = uploader(("bomb.zip", archive))
    assert_rejected(response, 413, "archive_too_large", "bomb.zip/bomb.dcm", _isolated_storage)


def test_zip_bomb_total_size(uploader: Callable, settings: Any, _isolated_storage: Path) -> None:
    settings.PLEURA_ZIP_MAX_TOTAL_BYTES = 50_000
    archive = zip_bytes({f"f{i}.dcm": os.urandom(20_000) for i in range(4)}, compression=zipfile.ZIP_STORED)
    response = uploader(("big.zip", archive))
    assert_rejected(response, 413, "archive_too_large", "big.zip", _isolated_storage)


def test_file_over_size_limit(uploader: Callable, settings: Any, _isolated_storage: Path) -> None:
    settings.PLEURA_MAX_UPLOAD_BYTES = 2000
    response = uploader(("large.dcm", make_dicom(rows=64, columns=64)))
    assert_rejected(response, 413, "file_too_large", "large.dcm", _isolated_storage)


def test_upload_mixing_two_patients(uploader: Callable, _isolated_storage: Path) -> None:
    first = make_dicom(patient_id=ORIGINAL_PATIENT_ID)
    second = make_dicom(patient_id="OTHER-PATIENT-99", patient_name="Roe^Richard", z=5.0)
    response = uploader(("a.dcm", first), ("b.dcm", second))
    assert_rejected(response, 400, "mixed_patients", "b.dcm", _isolated_storage)
    assert "OTHER-PATIENT-99" not in response.content.decode()
    assert "Roe" not in response.content.decode()


def test_failure_while_storing_rolls_back_and_deletes_files(
    uploader: Callable, _isolated_storage: Path
) -> None:
    """A conflict found after the first series was written: DB rolled back, files removed."""
    assert uploader(("p1.dcm", make_dicom(study_uid="1.2.3.100", series_uid="1.2.3.100.1"))).status_code == 201
    files_before = stored_files(_isolated_storage)
    new_series = make_dicom(patient_id="SECOND-PT", study_uid="1.2.3.200", series_uid="1.2.3.200.1")
    clash = make_dicom(patient_id="SECOND-PT", study_uid="1.2.3.100", series_uid="1.2.3.100.2", z=3.0)
    response = uploader(("new.dcm", new_series), ("clash.dcm", clash))
    assert response.status_code == 400
    assert response.json()["code"] == "mixed_patients"
    assert stored_files(_isolated_storage) == files_before
    assert Series.objects.count() == 1 and Upload.objects.count() == 1 and Patient.objects.count() == 1


def test_server_keeps_serving_after_bad_input(uploader: Callable) -> None:
    assert uploader(("notes.txt", b"garbage")).status_code == 415
    assert uploader(("cut.dcm", make_dicom()[:-40])).status_code == 400
    response = uploader(("good.dcm", make_dicom()))
    assert response.status_code == 201, response.content
    assert response.json()["num_instances"] == 1


def test_dicom_with_malformed_uid(uploader: Callable, project: Any, _isolated_storage: Path) -> None:
    """With identifiers kept, UIDs are used as they are (and name the stored files): validate them."""
    project.deidentify = False
    project.save()
    response = uploader(("baduid.dcm", make_dicom(series_uid="1.2.abc/../x")))
    assert_rejected(response, 400, "invalid_dicom", "baduid.dcm", _isolated_storage)


def test_deflated_transfer_syntax_refused_before_inflating(uploader: Callable, _isolated_storage: Path) -> None:
    from pydicom import dcmread
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dcmread(io.BytesIO(make_dicom()))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = uploader(("deflated.dcm", buffer.getvalue()))
    assert_rejected(response, 415, "unsupported_transfer_syntax", "deflated.dcm", _isolated_storage)


def test_series_with_mixed_image_sizes(uploader: Callable, _isolated_storage: Path) -> None:
    response = uploader(("s1.dcm", make_dicom(rows=8, columns=8)), ("s2.dcm", make_dicom(rows=16, columns=16, z=2.0)))
    assert_rejected(response, 400, "inconsistent_series", "s2.dcm", _isolated_storage)
