"""De-identification rules on a synthetic dataset full of identifiers (no database)."""

from __future__ import annotations

import io

import pydicom
import pytest

from backend_factories import ORIGINAL_DATE, ORIGINAL_PATIENT_ID, ORIGINAL_PATIENT_NAME, make_dicom
from imaging.services import dataset_bytes
from imaging.deid import date_offset_days, deidentify, pseudonym_for, remap_uid, shift_da, shift_dt

SECRET = "unit-test-secret"


def deidentified() -> tuple[pydicom.Dataset, pydicom.Dataset]:
    original = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds = pydicom.dcmread(io.BytesIO(make_dicom(sop_uid=str(original.SOPInstanceUID))))
    deidentify(ds, SECRET)
    return original, ds


def test_uid_remap_is_deterministic_keyed_and_valid() -> None:
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert remap_uid(SECRET, uid) == remap_uid(SECRET, uid)
    assert remap_uid(SECRET, uid) != remap_uid("other-secret", uid)
    assert remap_uid(SECRET, uid) != remap_uid(SECRET, uid + ".1")
    new = remap_uid(SECRET, uid)
    assert new.startswith("2.25.") and len(new) <= 64 and new.replace(".", "").isdigit()


def test_date_shift_is_per_patient_nonzero_and_bounded() -> None:
    offsets = {date_offset_days(SECRET, f"id:P{i}") for i in range(50)}
    assert all(-3650 <= o <= -1 for o in offsets)
    assert len(offsets) > 40
    assert date_offset_days(SECRET, "id:P1") == date_offset_days(SECRET, "id:P1")
    assert shift_da("20190315", -15) == "20190228"
    assert shift_dt("20190315101500.123+0100", -1) == "20190314101500.123+0100"
    assert shift_da("garbage", -3) == ""


def test_identifiers_removed_or_replaced() -> None:
    original, ds = deidentified()
    pseudonym = pseudonym_for(SECRET, f"id:{ORIGINAL_PATIENT_ID}")
    assert ds.PatientID == pseudonym and str(ds.PatientName) == pseudonym
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == ""
    for keyword in ("InstitutionName", "InstitutionAddress", "OperatorsName", "StudyDescription",
                    "ImageComments", "OtherPatientIDs"):
        assert keyword not in ds, keyword
    assert ds.ReferringPhysicianName == ""
    assert "PerformingPhysicianName" not in ds.ReferencedImageSequence[0]
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.PatientSex == "M"


def test_uids_remapped_everywhere_and_dates_shifted() -> None:
    original, ds = deidentified()
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert ds[keyword].value == remap_uid(SECRET, original[keyword].value)
    assert ds.SOPClassUID == original.SOPClassUID
    ref = ds.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == remap_uid(SECRET, original.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
    offset = date_offset_days(SECRET, f"id:{ORIGINAL_PATIENT_ID}")
    assert ds.StudyDate == shift_da(ORIGINAL_DATE, offset) != ORIGINAL_DATE
    assert ds.AcquisitionDateTime.startswith(shift_da(ORIGINAL_DATE, offset))
    assert ds.StudyTime == original.StudyTime


@pytest.mark.parametrize("needle", [ORIGINAL_PATIENT_ID, "Johnathan", ORIGINAL_DATE, "Example", "ACC-998877"])
def test_no_original_value_left_in_bytes(needle: str) -> None:
    original, ds = deidentified()
    data = dataset_bytes(ds)  # the bytes ingest stores (fresh file meta)
    assert needle.encode() not in data
    assert str(original.StudyInstanceUID).encode() not in data


def test_text_containing_patient_id_is_removed() -> None:
    """Attributes outside the removal list go too when they quote the patient's ID or name."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.Manufacturer = f"scanner of {ORIGINAL_PATIENT_ID.lower()}"
    ds.BodyPartExamined = "CHEST"
    ds.ManufacturerModelName = f"model {ORIGINAL_PATIENT_NAME.split('^')[1]}"
    deidentify(ds, SECRET)
    assert "Manufacturer" not in ds and "ManufacturerModelName" not in ds
    assert ds.BodyPartExamined == "CHEST"


def test_burned_in_annotation_is_reported() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.BurnedInAnnotation = "YES"
    assert deidentify(ds, SECRET).burned_in_annotation == "YES"
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    assert deidentify(ds, SECRET).burned_in_annotation == "UNKNOWN"
