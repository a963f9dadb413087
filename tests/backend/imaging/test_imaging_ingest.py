"""Ingest service: series split, CT ordering, geometry, X-ray and NIfTI conversion, duplicates."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

from backend_factories import ORIGINAL_PATIENT_ID, make_dicom, make_png
from imaging.models import Instance, Patient, Project, Series, SourceFormat, Study
from imaging.services import compute_series_statistics, ingest
from imaging.signals import series_ingested
from imaging.sources import SourceFile

pytestmark = pytest.mark.django_db


def ct_series(series_uid: str, zs: list[float], **kwargs: Any) -> list[SourceFile]:
    return [
        SourceFile(f"{series_uid}-{i}.dcm", make_dicom(series_uid=series_uid, instance_number=i + 1, z=z, **kwargs))
        for i, z in enumerate(zs)
    ]


def test_upload_with_two_series_is_split_and_ct_sorted_by_position(project: Project) -> None:
    files = ct_series("1.2.3.1", [10.0, 0.0, 5.0]) + ct_series("1.2.3.2", [2.0, 1.0])
    result = ingest(project, files)
    assert result.num_instances == 5 and len(result.series) == 2
    assert Patient.objects.count() == 1 and Study.objects.count() == 1
    first = Series.objects.get(pk=result.series[0].pk)
    assert first.num_instances == 3 and first.slice_spacing == pytest.approx(5.0)
    assert first.pixel_spacing_row == pytest.approx(0.7) and first.orientation == [1, 0, 0, 0, 1, 0]
    assert [i.slice_location for i in first.instances.all()] == [0.0, 5.0, 10.0]
    assert first.series_instance_uid != "1.2.3.1" and first.series_instance_uid.startswith("2.25.")


def test_implicit_vr_is_stored_as_explicit_vr_with_the_same_values(project: Project) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    data = make_dicom(transfer_syntax=ImplicitVRLittleEndian, rows=16, columns=12)
    received = pydicom.dcmread(io.BytesIO(data))
    assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ingest(project, [SourceFile("implicit.dcm", data)])
    instance = Instance.objects.get()
    with instance.file.open("rb") as fh:
        stored = pydicom.dcmread(fh)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not stored.original_encoding[0]  # really written explicit, not only labelled so
    assert stored["PixelData"].VR == "OW"
    assert np.array_equal(stored.pixel_array, received.pixel_array)
    for keyword in ("Rows", "Columns", "ImagePositionPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept"):
        assert stored.get(keyword) == received.get(keyword), keyword


def test_implicit_vr_with_an_element_of_undecidable_vr_is_stored_as_received(project: Project) -> None:
    """A top-level LUT descriptor read from implicit VR stays 'US or SS' (pydicom cannot decide it),
    which explicit VR cannot write: the file is kept in implicit VR instead of failing the upload."""
    from pydicom.uid import ImplicitVRLittleEndian

    received = pydicom.dcmread(io.BytesIO(make_dicom(transfer_syntax=ImplicitVRLittleEndian)))
    received.add_new(0x00281100, "US", [256, 0, 16])  # Gray Lookup Table Descriptor
    received.add_new(0x00281200, "OW", bytes(512))  # Gray Lookup Table Data
    buffer = io.BytesIO()
    received.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    assert pydicom.dcmread(io.BytesIO(data))[0x00281100].VR == "US or SS"  # as a reader sees it
    result = ingest(project, [SourceFile("lut.dcm", data)])
    assert result.num_instances == 1
    with Instance.objects.get().file.open("rb") as fh:
        stored = pydicom.dcmread(fh)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert np.frombuffer(stored[0x00281100].value, "<u2").tolist() == [256, 0, 16]  # undecoded: VR still unknown
    assert np.array_equal(stored.pixel_array, received.pixel_array)


def test_stored_names_come_from_uids_not_user_paths(project: Project, _isolated_storage: Path) -> None:
    ingest(project, [SourceFile("../../Patient Doe/secret name.dcm", make_dicom())])
    instance = Instance.objects.get()
    assert instance.file.name == (
        f"projects/{project.pk}/{instance.series.study.study_instance_uid}/"
        f"{instance.series.series_instance_uid}/{instance.sop_instance_uid}.dcm"
    )
    assert all("Doe" not in str(p) for p in _isolated_storage.rglob("*"))


def test_same_original_uid_maps_to_same_uid_and_duplicates_are_skipped(project: Project) -> None:
    data = make_dicom(sop_uid="1.2.3.9.9")
    first = ingest(project, [SourceFile("a.dcm", data)])
    again = ingest(project, [SourceFile("a-copy.dcm", data)])
    assert first.num_instances == 1 and again.num_instances == 0 and again.num_duplicates == 1
    assert Instance.objects.count() == 1


def test_same_patient_same_pseudonym_across_uploads_but_not_across_projects(project: Project, other_project: Project) -> None:
    ingest(project, [SourceFile("a.dcm", make_dicom(series_uid="1.5.1"))])
    ingest(project, [SourceFile("b.dcm", make_dicom(series_uid="1.5.2", study_uid="1.5"))])
    ingest(other_project, [SourceFile("a.dcm", make_dicom(series_uid="1.5.1"))])
    assert project.patients.count() == 1
    assert project.patients.get().pseudonym != other_project.patients.get().pseudonym


def test_project_may_keep_identifiers(project: Project) -> None:
    project.deidentify = False
    project.save()
    ingest(project, [SourceFile("a.dcm", make_dicom(series_uid="1.2.3.4"))])
    series = Series.objects.get()
    assert series.series_instance_uid == "1.2.3.4"
    assert pydicom.dcmread(series.instances.get().file.open("rb")).PatientID == ORIGINAL_PATIENT_ID


def test_png_becomes_secondary_capture(project: Project) -> None:
    result = ingest(project, [SourceFile("chest.png", make_png((32, 24)))], modality="CR")
    series = result.series[0]
    assert (series.modality, series.source_format, series.rows, series.columns) == ("CR", SourceFormat.IMAGE, 24, 32)
    assert series.burned_in_annotation == "UNKNOWN" and result.warnings
    ds = pydicom.dcmread(series.instances.get().file.open("rb"))
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.Modality) == ("MONOCHROME2", 8, "CR")
    assert ds.pixel_array.shape == (24, 32) and ds.pixel_array.dtype == np.uint8
    assert ds.StudyInstanceUID.startswith("2.25.")


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("I;16", "PNG")])
def test_jpeg_and_16_bit_png_become_8_bit_grayscale(mode: str, fmt: str, project: Project) -> None:
    from PIL import Image

    ramp = np.arange(20 * 30).reshape(20, 30)
    if mode == "I;16":
        image = Image.fromarray((ramp * 100).astype(np.uint16))
    else:
        image = Image.fromarray((ramp % 256).astype(np.uint8)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    result = ingest(project, [SourceFile(f"xray.{fmt.lower()}", buffer.getvalue())])
    ds = pydicom.dcmread(result.series[0].instances.get().file.open("rb"))
    assert ds.pixel_array.shape == (20, 30) and ds.pixel_array.dtype == np.uint8
    assert ds.SamplesPerPixel == 1 and ds.pixel_array.max() > 200


def test_nifti_becomes_ct_series_with_geometry(project: Project) -> None:
    volume = (np.arange(4 * 3 * 5).reshape(4, 3, 5) * 10 - 1000).astype(np.int16)  # (i, j, k)
    affine = np.array([[-0.8, 0, 0, 50.0], [0, -0.9, 0, 60.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    raw = gzip.compress(nib.Nifti1Image(volume, affine).to_bytes())
    result = ingest(project, [SourceFile("ct.nii.gz", raw)])
    series = Series.objects.get(pk=result.series[0].pk)
    assert (series.modality, series.rows, series.columns, series.num_instances) == ("CT", 3, 4, 5)
    assert series.pixel_spacing_row == pytest.approx(0.9) and series.pixel_spacing_column == pytest.approx(0.8)
    assert series.slice_spacing == pytest.approx(2.5)
    # RAS (-0.8 along x) becomes LPS (+0.8 along x): row direction (1, 0, 0), column direction (0, 1, 0)
    assert series.orientation == pytest.approx([1, 0, 0, 0, 1, 0])
    instances = list(series.instances.all())
    ds = pydicom.dcmread(instances[2].file.open("rb"))
    assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([-50.0, -60.0, -25.0])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.shape == (3, 4)
    assert hu[1, 3] == volume[3, 1, 2]  # row j=1, column i=3 of slice k=2


def test_signal_and_statistics_after_commit(project: Project, django_capture_on_commit_callbacks: Any) -> None:
    received: list[tuple[int, bool]] = []
    stats_when_received: list[Any] = []

    def receiver(sender: Any, series: Series, created: bool, upload: Any, **kwargs: Any) -> None:
        received.append((series.pk, created))
        stats_when_received.append(Series.objects.get(pk=series.pk).stats)

    series_ingested.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = ingest(project, ct_series("1.9.1", [0.0, 1.0]))
    finally:
        series_ingested.disconnect(receiver)
    series = Series.objects.get(pk=result.series[0].pk)
    assert received == [(series.pk, True)]
    assert not stats_when_received[0], "the proposals' receivers must be queued before the statistics"
    assert series.stats["slices"] == 2 and series.stats["unit"] == "HU"
    assert series.stats["min"] == -50.0 and series.stats["max"] == 14.0  # arange(64) - 50 + z, z = 0, 1


def test_statistics_of_missing_series_is_none(db: Any) -> None:
    assert compute_series_statistics(987654) is None


def test_zip_of_dicom(project: Project) -> None:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, z in enumerate([0.0, 3.0]):
            archive.writestr(f"series/{i}.dcm", make_dicom(instance_number=i + 1, z=z))
        archive.writestr("__MACOSX/._0.dcm", b"junk")
    result = ingest(project, [SourceFile("upload.zip", buffer.getvalue())])
    assert result.num_instances == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_of_the_same_series(_isolated_storage: Path) -> None:
    """Two simultaneous uploads of the same files: no error, each instance stored once."""
    import threading

    from django.db import connection as default_connection

    project = Project.objects.create(name="race")
    files = [SourceFile(f"{i}.dcm", make_dicom(sop_uid=f"1.3.6.1.4.1.99999.5.{i}", z=float(i))) for i in range(6)]
    errors: list[Exception] = []
    barrier = threading.Barrier(2)

    def upload() -> None:
        from django.db import connection

        try:
            barrier.wait(timeout=10)
            ingest(project, files)
        except Exception as exc:  # collected and asserted on by the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert Instance.objects.filter(project=project).count() == 6
    assert Series.objects.get(project=project).num_instances == 6
    assert len([p for p in _isolated_storage.rglob("*.dcm")]) == 6
    assert default_connection.vendor == "postgresql"
