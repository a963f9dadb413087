"""Crafted DICOM files for the de-identification tests: identifiers planted where a real PACS
puts them, nested and private, and patient names that collide with common DICOM values.

Every planted identifier carries a marker ``ZQnn`` (any case) that appears nowhere else, so a
test can search the whole de-identified output for it; dates and UIDs are unique values.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Plant:
    """One identifier planted in the corpus and what de-identification must do with it.

    ``path`` steps are keywords, hex tags (``"0x00100014"``) or item indexes; ``expect`` is
    ``absent`` (X, or inside a removed sequence/item), ``empty`` (Z), ``dummy`` (D),
    ``pseudonym``, ``replaced`` (by Pleura's own value), ``shifted`` (dates), ``remapped``
    (UIDs) or ``zeroed`` (preamble).
    """

    path: Path
    phi: str
    expect: str

    @property
    def label(self) -> str:
        """``RequestAttributesSequence > RequestedProcedureID`` style name of the location."""
        return " > ".join(str(step) for step in self.path if not isinstance(step, int))


ORIGINAL_STUDY_UID = "1.2.826.0.1.3680043.9.4242.1"
ORIGINAL_SERIES_UID = "1.2.826.0.1.3680043.9.4242.1.2"
ORIGINAL_SOP_UID = "1.2.826.0.1.3680043.9.4242.1.2.3"
ORIGINAL_FOR_UID = "1.2.826.0.1.3680043.9.4242.1.9"
PATIENT_NAME = "Zq01quark^Zebulon"
PATIENT_ID = "ZQ02-4711"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _item(**values: Any) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


# Top-level attributes: (keyword, planted value, expected action).
TOP_LEVEL: tuple[tuple[str, str, str], ...] = (
    ("PatientName", PATIENT_NAME, "pseudonym"),
    ("PatientID", PATIENT_ID, "pseudonym"),
    ("OtherPatientIDs", "ZQ03-OTHER", "absent"),
    ("OtherPatientNames", "Zq04^Alias", "absent"),
    ("PatientBirthName", "Zq05^Birth", "absent"),
    ("PatientMotherBirthName", "Zq06^Mother", "absent"),
    ("PatientAddress", "12 Zq07 Lane, Springfield", "absent"),
    ("PatientTelephoneNumbers", "555-ZQ08", "absent"),
    ("MilitaryRank", "Zq09 Captain", "absent"),
    ("MedicalRecordLocator", "MRL-ZQ10", "absent"),
    ("Occupation", "Zq11 welder", "absent"),
    ("AdditionalPatientHistory", "Zq12 smoker since 1970", "absent"),
    ("PatientComments", "Zq13 prefers mornings", "absent"),
    ("InstitutionName", "Zq14 General Hospital", "absent"),
    ("InstitutionAddress", "Zq15 Hospital Road", "absent"),
    ("InstitutionalDepartmentName", "Zq16 Radiology", "absent"),
    ("StationName", "ZQ17CT01", "absent"),
    ("ReferringPhysicianName", "Zq18^Gregory", "empty"),
    ("ReferringPhysicianTelephoneNumbers", "555-ZQ19", "absent"),
    ("PerformingPhysicianName", "Zq20^Perf", "absent"),
    ("OperatorsName", "Zq21^Tech", "absent"),
    ("NameOfPhysiciansReadingStudy", "Zq22^Reader", "absent"),
    ("RequestingPhysician", "Zq23^Req", "absent"),
    ("AccessionNumber", "ZQ24ACC", "empty"),
    ("StudyID", "ZQ25", "empty"),
    ("StudyDescription", "Chest for Zq26", "absent"),
    ("SeriesDescription", "Axial Zq27", "absent"),
    ("ProtocolName", "Zq28 lung protocol", "absent"),
    ("DeviceSerialNumber", "SN-ZQ29", "absent"),
    ("ImageComments", "Zq30 follow-up", "absent"),
    ("PerformedStationAETitle", "ZQ31AE", "absent"),  # (0040,0241)
    ("PerformedStationName", "Zq32 station", "absent"),  # (0040,0242)
    ("PerformedLocation", "Zq33 room 4", "absent"),  # (0040,0243)
    ("ScheduledStationName", "Zq34 sched", "absent"),  # (0040,0010)
    ("ScheduledProcedureStepLocation", "Zq35 loc", "absent"),  # (0040,0011)
    ("RequestedProcedureLocation", "Zq36 req loc", "absent"),  # (0040,1005)
    ("OrderEntererLocation", "Zq37 enterer", "absent"),  # (0040,2009)
    ("OrderCallbackPhoneNumber", "555-ZQ38", "absent"),  # (0040,2010)
    ("PerformedProcedureStepID", "ZQ39", "absent"),
    ("PerformedProcedureStepDescription", "Zq40 step", "absent"),
    ("ClinicalTrialSponsorName", "Zq55 Pharma", "dummy"),
    ("AdmittingDiagnosesDescription", "Zq66 pneumonia", "absent"),
    ("ReasonForStudy", "Zq67 cough", "absent"),
    ("RequestedProcedureDescription", "Zq68 CT chest", "absent"),
    ("ResponsiblePerson", "Zq71^Resp", "absent"),
    ("IssuerOfPatientID", "ZQ72 ISSUER", "absent"),
    ("ContentCreatorName", "Zq73^Creator", "empty"),
    ("DetectorID", "ZQ74", "absent"),
    ("FillerOrderNumberImagingServiceRequest", "ZQ75", "empty"),
    ("PlacerOrderNumberImagingServiceRequest", "ZQ76", "empty"),
    ("ManufacturerModelName", "CT model Zq01quark", "absent"),  # not in the table: names the patient
    ("DeidentificationMethod", "Zq65 previous tool", "replaced"),
    ("PatientBirthDate", "19710304", "empty"),
    ("StudyDate", "20190315", "shifted"),
    ("SeriesDate", "20190316", "shifted"),
    ("AcquisitionDateTime", "20190317101500", "shifted"),
    ("DateOfLastCalibration", "20180611", "shifted"),  # X in the table, C under the modified-dates option
)


def full_plants() -> list[Plant]:
    """Every identifier of the full file (≥ 40 attributes; nested, private, meta, preamble)."""
    plants = [Plant((keyword,), value, expect) for keyword, value, expect in TOP_LEVEL]
    plants += [
        Plant(("RequestAttributesSequence", 0, "RequestedProcedureID"), "ZQ41", "absent"),
        Plant(("RequestAttributesSequence", 0, "ScheduledProcedureStepID"), "ZQ42", "absent"),
        Plant(("RequestAttributesSequence", 0, "ScheduledProtocolCodeSequence", 0, "CodeMeaning"),
              "Zq43 protocol for Quark", "absent"),
        Plant(("ReferencedPatientSequence", 0, "ReferencedSOPInstanceUID"), "1.2.826.0.1.3680043.9.4242.44", "absent"),
        Plant(("AnatomicRegionSequence", 1, "CodeMeaning"), "Zq45 Quark's left chest", "absent"),
        Plant(("ProcedureCodeSequence", 0, "CodeMeaning"), "Zq46 CT for patient Quark", "absent"),
        Plant(("ReferencedImageSequence", 0, "PerformingPhysicianName"), "Zq47^Nested", "absent"),
        Plant(("ReferencedImageSequence", 0, "ReferencedSOPInstanceUID"), "1.2.826.0.1.3680043.9.4242.48", "remapped"),
        Plant(("ContentSequence", 0, "TextValue"), "Zq49 findings discussed with family", "absent"),
        Plant(("ContentSequence", 0, "PersonName"), "Zq50^Observer", "dummy"),
        Plant(("OriginalAttributesSequence", 0, "ModifiedAttributesSequence", 0, "PatientName"), "Zq51^Original", "absent"),
        Plant(("OriginalAttributesSequence", 0, "ModifyingSystem"), "ZQ63 SYSTEM", "absent"),
        Plant(("InstitutionCodeSequence", 0, "CodeMeaning"), "Zq52 Hospital", "absent"),
        Plant(("0x00090010",), "ZQ53 CREATOR", "absent"),
        Plant(("0x00091010",), "Zq54 private note", "absent"),
        Plant(("0x00091011",), "Zq56 private bytes", "absent"),
        Plant(("0x00091012", 0, "PatientName"), "Zq57^PrivateSeq", "absent"),
        Plant(("0x60003000",), "Zq58 overlay", "absent"),
        Plant(("0x60004000",), "Zq59 overlay comment", "absent"),
        Plant(("0x00100014",), "Zq60 2026c patient attribute", "absent"),  # newer than pydicom's dictionary
        Plant(("file meta", "SourceApplicationEntityTitle"), "ZQ61SRC", "absent"),
        Plant(("file meta", "MediaStorageSOPInstanceUID"), ORIGINAL_SOP_UID, "remapped"),
        Plant(("preamble",), "Zq62 TIFF header", "zeroed"),
        Plant(("StudyInstanceUID",), ORIGINAL_STUDY_UID, "remapped"),
        Plant(("SeriesInstanceUID",), ORIGINAL_SERIES_UID, "remapped"),
        Plant(("SOPInstanceUID",), ORIGINAL_SOP_UID, "remapped"),
        Plant(("FrameOfReferenceUID",), ORIGINAL_FOR_UID, "remapped"),
    ]
    return plants


def _image(ds: Dataset, *, rows: int = 16, columns: int = 16) -> None:
    """CT image attributes needed to decode and interpret the pixels."""
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "Philips"
    ds.ScanOptions = "HELICAL"
    ds.ConvolutionKernel = "STANDARD"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.PatientSex = "F"
    ds.PatientAge = "052Y"
    ds.KVP = 120
    ds.SliceThickness = 1.25
    ds.ImagePositionPatient = [-120.0, -110.5, 42.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.68, 0.68]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    ds.InstanceNumber = 7
    ds.SeriesNumber = 2
    ds.BurnedInAnnotation = "NO"
    pixels = (np.arange(rows * columns, dtype=np.int16).reshape(rows, columns) * 7) % 2000 - 1000
    ds.PixelData = pixels.astype("<i2").tobytes()


def _new_dataset(transfer_syntax: str, sop_uid: str, source_ae: str = "") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    if source_ae:
        ds.file_meta.SourceApplicationEntityTitle = source_ae
    return ds


def _plant_nested(ds: Dataset) -> None:
    request = _item(RequestedProcedureID="ZQ41", ScheduledProcedureStepID="ZQ42")
    request.ScheduledProtocolCodeSequence = Sequence([_code("P1", "99HOSP", "Zq43 protocol for Quark")])
    ds.RequestAttributesSequence = Sequence([request])
    ds.ReferencedPatientSequence = Sequence([_item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.1.1", ReferencedSOPInstanceUID="1.2.826.0.1.3680043.9.4242.44")])
    ds.AnatomicRegionSequence = Sequence([_code("39607008", "SCT", "Lung structure"),
                                          _code("LC1", "99LOCAL", "Zq45 Quark's left chest")])
    ds.ProcedureCodeSequence = Sequence([_code("PX1", "L", "Zq46 CT for patient Quark")])
    ds.ReferencedImageSequence = Sequence([_item(
        ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID="1.2.826.0.1.3680043.9.4242.48",
        PerformingPhysicianName="Zq47^Nested")])
    content = _item(ValueType="TEXT", TextValue="Zq49 findings discussed with family", PersonName="Zq50^Observer")
    content.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    ds.ContentSequence = Sequence([content])
    modified = _item(PatientName="Zq51^Original")
    ds.OriginalAttributesSequence = Sequence([_item(ModifiedAttributesSequence=Sequence([modified]),
                                                    ModifyingSystem="ZQ63 SYSTEM")])
    ds.InstitutionCodeSequence = Sequence([_code("H1", "99HOSP", "Zq52 Hospital")])


def _plant_private_and_overlay(ds: Dataset) -> None:
    ds.add_new(0x00090010, "LO", "ZQ53 CREATOR")
    ds.add_new(0x00091010, "LO", "Zq54 private note")
    ds.add_new(0x00091011, "OB", b"Zq56 private bytes\x00")
    ds.add_new(0x00091012, "SQ", Sequence([_item(PatientName="Zq57^PrivateSeq")]))
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60003000, "OW", b"Zq58 overlay\x00\x00" + b"\x00" * 18)
    ds.add_new(0x60004000, "LT", "Zq59 overlay comment")
    ds.add_new(0x00100014, "LO", "Zq60 2026c patient attribute")


def full_file() -> bytes:
    """The CT instance with identifiers in every place of ``full_plants()`` (explicit VR)."""
    ds = _new_dataset(ExplicitVRLittleEndian, ORIGINAL_SOP_UID, source_ae="ZQ61SRC")
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = ORIGINAL_STUDY_UID, ORIGINAL_SERIES_UID, ORIGINAL_SOP_UID
    ds.FrameOfReferenceUID = ORIGINAL_FOR_UID
    for keyword, value, _ in TOP_LEVEL:
        setattr(ds, keyword, value)
    ds.StudyTime = "101500"
    _plant_nested(ds)
    _plant_private_and_overlay(ds)
    _image(ds)
    ds.preamble = b"Zq62 TIFF header".ljust(128, b"\x00")
    return _bytes(ds)


# Patient names made of values that DICOM uses elsewhere (Photometric, Image Type, Scan Options…).
COLLIDING_NAMES: tuple[str, ...] = (
    "ONO^PHIL", "MONO^CHROME", "ORIGINAL^PRIMARY", "AXIAL^HELICAL", "CT^SPIRAL", "STANDARD^CHEST",
    "HFS^MONOCHROME2", "DERIVED^SECONDARY",
)
COLLISION_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)


def colliding_file(name: str, index: int) -> bytes:
    """A CT instance of patient ``name``, the name repeated where identifiers hide."""
    syntax = COLLISION_SYNTAXES[index % len(COLLISION_SYNTAXES)]
    sop_uid = f"1.2.826.0.1.3680043.9.4343.{index}.1"
    ds = _new_dataset(ExplicitVRLittleEndian if syntax == RLELossless else syntax, sop_uid)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.9.4343.{index}", f"1.2.826.0.1.3680043.9.4343.{index}.2"
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = name
    ds.PatientID = name.replace("^", "")
    ds.OtherPatientNames = name
    ds.PatientBirthName = name
    ds.StudyDescription = f"CT chest {name.replace('^', ' ')}"
    ds.ReferencedPatientSequence = Sequence([_item(PatientName=name)])
    ds.add_new(0x00291010, "LO", name)
    _image(ds)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    return _bytes(ds)


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read(data: bytes) -> Dataset:
    """Parse corpus bytes into a dataset (the way ingest reads an upload)."""
    return pydicom.dcmread(io.BytesIO(data))
