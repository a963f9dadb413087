"""Synthetic test inputs for the backend tests: DICOM full of identifiers, small PNGs."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ORIGINAL_PATIENT_ID = "PAT-ORIG-4711"
ORIGINAL_PATIENT_NAME = "Doe^Johnathan"
ORIGINAL_DATE = "20190315"


def make_dicom(
    *,
    patient_id: str = ORIGINAL_PATIENT_ID,
    patient_name: str = ORIGINAL_PATIENT_NAME,
    study_uid: str = "1.3.6.1.4.1.99999.1",
    series_uid: str = "1.3.6.1.4.1.99999.1.1",
    sop_uid: str | None = None,
    instance_number: int = 1,
    z: float = 0.0,
    modality: str = "CT",
    rows: int = 8,
    columns: int = 8,
    pixel_data: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> bytes:
    """A small DICOM file full of identifiers to remove (bytes of a Part-10 file)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid(prefix="1.3.6.1.4.1.99999.2.")
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate = ORIGINAL_DATE
    ds.SeriesDate = ORIGINAL_DATE
    ds.AcquisitionDateTime = ORIGINAL_DATE + "101500"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC-998877"
    ds.InstitutionName = "St Example Hospital"
    ds.InstitutionAddress = "1 Example Road"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.OperatorsName = "Tech^Tom"
    ds.StudyDescription = f"Chest for {patient_name}"
    ds.ImageComments = f"patient {patient_id} follow-up"
    ds.OtherPatientIDs = patient_id + "-B"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = study_uid + ".77"
    ref.PerformingPhysicianName = "Nested^Person"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00091010, "LO", f"private {patient_id}")
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [-100.0, -100.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    if pixel_data:
        ds.PixelData = (np.arange(rows * columns, dtype="<i2") - 50 + int(z)).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_png(size: tuple[int, int] = (32, 24), value: int = 7) -> bytes:
    """A small grayscale PNG (width, height)."""
    from PIL import Image

    buffer = io.BytesIO()
    array = (np.arange(size[0] * size[1]).reshape(size[1], size[0]) % 256).astype(np.uint8)
    array[0, 0] = value
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
