"""Real data: the TCIA DICOM series, a chest X-ray PNG and a NIfTI CT from ../shared/data."""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection

from imaging.models import Instance, Project, Series

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


@pytest.fixture
def lungdx(shared_data: Path) -> Path:
    return shared_data / "ct" / "dicom" / "lungdx_A0001"


def original_identifiers(folder: Path) -> set[bytes]:
    """Patient ID/name, every date and every non-standard UID of the original series."""
    needles: set[bytes] = {b"Lung_Dx-A0001", b"A0001"}
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for elem in ds.iterall():
            if elem.VR in ("DA", "DT") and elem.value:
                needles.add(str(elem.value)[:8].encode())
            if elem.VR == "UI" and elem.value and not str(elem.value).startswith("1.2.840.10008."):
                needles.add(str(elem.value).encode())
        for keyword in ("PatientID", "PatientName"):
            if str(ds.get(keyword, "")):
                needles.add(str(ds.get(keyword)).encode())
    return needles


#: The model registry holds model cards, which name their training cases by dataset case name
#: (e.g. "pseudo_lungdx_A0001"): registry metadata, not uploaded data.
REGISTRY_TABLES = frozenset({"modeling_modelversion", "modeling_trainingrun"})


def database_text() -> str:
    """Every row of every table except the model registry as text (PostgreSQL), inside the test transaction."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            if table in REGISTRY_TABLES:
                continue
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


def test_real_ct_series_is_deidentified_everywhere(
    lungdx: Path, _isolated_storage: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the database scan uses PostgreSQL's row_to_json")
    Project.objects.create(name="real")
    caplog.set_level(logging.DEBUG)
    call_command("import_studies", str(lungdx), "--project", "real", "--no-progress")
    series = Series.objects.get()
    assert (series.modality, series.rows, series.columns, series.num_instances) == ("CT", 512, 512, 64)
    assert series.pixel_spacing_row == pytest.approx(0.841796875) and series.slice_spacing == pytest.approx(5.0)
    locations = [i.slice_location for i in series.instances.all()]
    assert locations == sorted(locations) and len(set(locations)) == 64

    needles = original_identifiers(lungdx)
    assert b"20070404" in needles and len(needles) > 64
    stored = [p for p in _isolated_storage.rglob("*") if p.is_file()]
    assert len(stored) == 64
    for path in stored:
        data = path.read_bytes()
        found = [n for n in needles if n in data]
        assert not found, f"{path.name} still contains {len(found)} original identifier(s)"
        assert str(path.relative_to(_isolated_storage)).startswith("projects/")
    db_text = database_text().encode()
    assert not [n for n in needles if n in db_text]
    logged = "\n".join(r.getMessage() for r in caplog.records).encode() + capsys.readouterr().out.encode()
    assert not [n for n in needles if n in logged]
    ds = pydicom.dcmread(stored[0])
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("PLR-")
    assert not any(elem.tag.is_private for elem in ds.iterall())


def test_real_ct_and_xray_through_the_api(
    lungdx: Path, shared_data: Path, project: Project, make_member: Callable, client_for: Callable
) -> None:
    client = client_for(make_member(project, "reviewer"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(lungdx.glob("*.dcm")):
            archive.write(path, f"lungdx/{path.name}")
    response = client.post("/api/uploads/", {"project": project.pk, "files": [SimpleUploadedFile("ct.zip", buffer.getvalue())]}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["num_instances"] == 64
    png = sorted((shared_data / "cxr" / "montgomery" / "images").glob("*.png"))[0]
    response = client.post("/api/uploads/", {"project": project.pk, "files": [SimpleUploadedFile(png.name, png.read_bytes())]}, format="multipart")
    assert response.status_code == 201, response.content
    listed = client.get(f"/api/series/?project={project.pk}").json()
    assert sorted(row["modality"] for row in listed["results"]) == ["CT", "DX"]
    xray = next(row for row in listed["results"] if row["modality"] == "DX")
    instance = client.get(f"/api/instances/?series={xray['id']}").json()["results"][0]
    dicom = client.get(instance["wado_url"])
    ds = pydicom.dcmread(io.BytesIO(b"".join(dicom.streaming_content)))
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and ds.BitsAllocated == 8
    assert "MCUCXR" not in str(ds)


def test_real_nifti_geometry_matches_simpleitk(shared_data: Path, project: Project) -> None:
    import SimpleITK as sitk

    path = shared_data / "ct" / "imlab_uiip" / "id004_ct.nii.gz"
    call_command("import_studies", str(path), "--project", project.name, "--no-progress")
    series = Series.objects.get()
    reference = sitk.ReadImage(str(path))
    size = reference.GetSize()
    assert (series.columns, series.rows, series.num_instances) == size
    first = pydicom.dcmread(Instance.objects.filter(series=series, instance_number=1).get().file.open("rb"))
    assert [float(v) for v in first.ImagePositionPatient] == pytest.approx(reference.GetOrigin(), abs=1e-3)
    assert float(first.PixelSpacing[1]) == pytest.approx(reference.GetSpacing()[0], rel=1e-4)
    assert series.slice_spacing == pytest.approx(reference.GetSpacing()[2], rel=1e-4)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    assert [float(v) for v in first.ImageOrientationPatient] == pytest.approx(
        list(direction[:, 0]) + list(direction[:, 1]), abs=1e-4
    )
    hu = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    assert np.allclose(hu, sitk.GetArrayFromImage(reference)[0], atol=float(first.RescaleSlope))
