"""De-identification of DICOM datasets in memory (DICOM PS3.15 Annex E basic profile essentials).

Rules (documented for users in docs/backend.md, keep both in step):

* Patient Name and Patient ID → the per-project pseudonym ``PLR-<12 hex>`` (keyed hash of the
  original Patient ID with the project secret: stable across uploads, not reversible).
* Every other person name (PN) anywhere, including in sequences → emptied.
* Birth date emptied; identifying patient, institution, physician, operator, device-serial,
  request/procedure, clinical-trial and description attributes (``REMOVE_KEYWORDS``) removed;
  Accession Number and Study ID emptied (type 2).
* Free text (LT, ST, UT value representations) removed everywhere; unknown-VR (UN) elements
  removed; any remaining text element that contains the original patient ID or a part of the
  original patient name (≥ 3 characters) removed.
* All UIDs (UI), except DICOM-registered ones (root ``1.2.840.10008.``), remapped to
  ``2.25.<128-bit keyed hash>``: same original UID → same new UID within a project.
* Dates (DA) and the date part of date-times (DT) shifted back by a per-patient offset of
  1–3650 days (keyed hash of the original Patient ID), so intervals within a patient are kept.
  Times (TM) are kept. Patient sex, age, size and weight are kept (Retain Patient
  Characteristics Option); equipment make/model is kept, serial numbers and station names are not.
* Private tags, overlay (60xx) and curve (50xx) groups, Original/Modified Attributes
  Sequences and digital signatures removed.
* Burned-in Annotation is read before anything changes and reported (YES/NO/UNKNOWN) so the
  series can be flagged; pixels are not altered.
* Patient Identity Removed = YES and De-identification Method are written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

logger = logging.getLogger(__name__)

UID_ROOT = "2.25."
DICOM_UID_ROOT = "1.2.840.10008."
PSEUDONYM_PREFIX = "PLR-"
MAX_DATE_SHIFT_DAYS = 3650
DEID_METHOD = "Pleura PS3.15 basic profile; keyed UIDs; dates shifted"

REMOVE_KEYWORDS: tuple[str, ...] = (
    # patient
    "PatientBirthTime", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientBirthName", "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers",
    "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "Occupation",
    "AdditionalPatientHistory", "PatientComments", "PatientInsurancePlanCodeSequence",
    "PatientPrimaryLanguageCodeSequence", "CountryOfResidence", "RegionOfResidence",
    "EthnicGroup", "PatientReligiousPreference", "MedicalAlerts", "Allergies", "SmokingStatus",
    "LastMenstrualDate", "SpecialNeeds", "PatientState", "ResponsiblePerson",
    "ResponsibleOrganization", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "CurrentPatientLocation", "PatientInstitutionResidence", "ReferencedPatientSequence",
    "AdmissionID", "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence",
    "PatientTransportArrangements", "PersonAddress", "PersonTelephoneNumbers",
    # institution, people, equipment identity
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "StationName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "RequestingPhysician", "RequestingService", "ScheduledPerformingPhysicianName",
    "ConsultingPhysicianName", "DeviceSerialNumber", "DetectorID", "GantryID", "PlateID",
    "CassetteID", "ContentCreatorName",
    # study / request / procedure descriptions and identifiers
    "StudyDescription", "SeriesDescription", "ProtocolName", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "RequestedProcedureDescription", "RequestedProcedureID",
    "RequestAttributesSequence", "ImageComments", "StudyComments", "DerivationDescription",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "ReasonForStudy",
    "RequestedProcedureCodeSequence", "ProcedureCodeSequence", "PerformedProcedureCodeSequence",
    # clinical trial
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription",
    "ClinicalTrialCoordinatingCenterName",
    # provenance that would carry originals
    "OriginalAttributesSequence", "ModifiedAttributesSequence", "DigitalSignaturesSequence",
    "EncryptedAttributesSequence", "MACParametersSequence", "DeidentificationMethodCodeSequence",
    "IconImageSequence",
)
EMPTY_KEYWORDS: tuple[str, ...] = ("AccessionNumber", "StudyID", "PatientBirthDate")
FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
TEXT_VRS = frozenset({"LO", "SH", "CS", "AE", "UC", "LT", "ST", "UT", "PN"})


def _tags(keywords: tuple[str, ...]) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword in de-identification rules: {keyword}")
        tags.add(tag)
    return frozenset(tags)


REMOVE_TAGS = _tags(REMOVE_KEYWORDS)
EMPTY_TAGS = _tags(EMPTY_KEYWORDS)
PATIENT_NAME_TAG = 0x00100010
PATIENT_ID_TAG = 0x00100020


def keyed_digest(secret: str, kind: str, value: str) -> bytes:
    """HMAC-SHA256 of ``kind:value`` keyed with the project secret."""
    return hmac.new(secret.encode(), f"{kind}:{value}".encode(), hashlib.sha256).digest()


def remap_uid(secret: str, uid: str) -> str:
    """Deterministic de-identified UID under the 2.25 root (≤ 44 characters)."""
    return UID_ROOT + str(int.from_bytes(keyed_digest(secret, "uid", uid)[:16], "big"))


def pseudonym_for(secret: str, patient_key: str) -> str:
    """Stable per-project pseudonym for a patient key, e.g. ``PLR-3F09A1C2B7DE``."""
    return PSEUDONYM_PREFIX + keyed_digest(secret, "patient", patient_key).hex()[:12].upper()


def date_offset_days(secret: str, patient_key: str) -> int:
    """Per-patient date shift in days, in ``[-3650, -1]`` (never zero)."""
    number = int.from_bytes(keyed_digest(secret, "dates", patient_key)[:4], "big")
    return -(number % MAX_DATE_SHIFT_DAYS + 1)


def shift_da(value: str, offset_days: int) -> str:
    """Shift a DICOM DA string (YYYYMMDD); unparseable values become empty."""
    text = value.strip()
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day + dt.timedelta(days=offset_days)).strftime("%Y%m%d")


def shift_dt(value: str, offset_days: int) -> str:
    """Shift the date part of a DICOM DT string, keeping the time and offset suffix."""
    text = value.strip()
    shifted = shift_da(text[:8], offset_days)
    return shifted + text[8:] if shifted else ""


@dataclass(frozen=True)
class DeidResult:
    """What de-identification decided for one dataset."""

    pseudonym: str
    date_offset_days: int
    burned_in_annotation: str


def original_patient_key(ds: Dataset) -> str:
    """The key identifying the patient before de-identification (kept in memory only)."""
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        return f"id:{patient_id}"
    return f"study:{ds.get('StudyInstanceUID', '')}"


def _identity_tokens(ds: Dataset) -> list[str]:
    tokens = {str(ds.get("PatientID", "") or "").strip()}
    name = str(ds.get("PatientName", "") or "").strip()
    tokens.add(name)
    tokens.update(part.strip() for part in name.replace("=", "^").split("^"))
    return sorted((t.lower() for t in tokens if len(t) >= 3), key=len, reverse=True)


def _map_values(value: Any, func: Any) -> Any:
    if isinstance(value, (list, MultiValue)):
        return [func(str(v)) for v in value]
    return func(str(value)) if value not in (None, "") else value


def _contains_identity(value: Any, tokens: list[str]) -> bool:
    values = value if isinstance(value, (list, MultiValue)) else [value]
    texts = [str(v).lower() for v in values if v is not None]
    return any(token in text for token in tokens for text in texts)


class _Deidentifier:
    def __init__(self, secret: str, pseudonym: str, offset: int, tokens: list[str]) -> None:
        self.secret = secret
        self.pseudonym = pseudonym
        self.offset = offset
        self.tokens = tokens

    def __call__(self, ds: Dataset, elem: DataElement) -> None:
        tag = int(elem.tag)
        group = tag >> 16
        if elem.tag.is_private or (group & 0xFF00) in (0x5000, 0x6000) or tag in REMOVE_TAGS:
            del ds[elem.tag]
        elif elem.VR in FREE_TEXT_VRS or elem.VR == "UN":
            del ds[elem.tag]
        elif tag in (PATIENT_NAME_TAG, PATIENT_ID_TAG):
            elem.value = self.pseudonym
        elif tag in EMPTY_TAGS or elem.VR == "PN":
            elem.value = ""
        elif elem.VR == "UI":
            elem.value = _map_values(elem.value, self._uid)
        elif elem.VR == "DA":
            elem.value = _map_values(elem.value, lambda v: shift_da(v, self.offset))
        elif elem.VR == "DT":
            elem.value = _map_values(elem.value, lambda v: shift_dt(v, self.offset))
        elif elem.VR in TEXT_VRS and elem.value and _contains_identity(elem.value, self.tokens):
            del ds[elem.tag]

    def _uid(self, uid: str) -> str:
        uid = uid.strip("\x00 ")
        if not uid or uid.startswith(DICOM_UID_ROOT):
            return uid
        return remap_uid(self.secret, uid)


def deidentify(ds: Dataset, secret: str) -> DeidResult:
    """De-identify ``ds`` in place (see module docstring for the rules).

    Args:
        ds: A dataset read from an upload; nothing of it must have been written anywhere yet.
        secret: The project's de-identification secret.

    Returns:
        The pseudonym, the date offset applied and the burned-in-annotation flag.
    """
    patient_key = original_patient_key(ds)
    burned_in = str(ds.get("BurnedInAnnotation", "") or "").upper()
    burned_in = burned_in if burned_in in ("YES", "NO") else "UNKNOWN"
    result = DeidResult(pseudonym_for(secret, patient_key), date_offset_days(secret, patient_key), burned_in)
    worker = _Deidentifier(secret, result.pseudonym, result.date_offset_days, _identity_tokens(ds))
    ds.walk(worker)
    ds.PatientName = result.pseudonym
    ds.PatientID = result.pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEID_METHOD
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code("113100", "Basic Application Confidentiality Profile"),
         _code("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
         _code("113108", "Retain Patient Characteristics Option")]
    )
    return result


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
