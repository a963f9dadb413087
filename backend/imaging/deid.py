"""De-identification of DICOM datasets in memory: DICOM PS3.15 Annex E, driven by the full table.

Rules (documented for users in docs/backend.md, keep both in step):

* Every attribute listed in Table E.1-1 (edition and source in ``imaging.deid_profile``) gets
  its action, in the top-level dataset and inside every sequence item: ``X`` removed, ``Z``
  emptied, ``D`` replaced by a dummy of its VR, ``U`` remapped, with the options Retain
  Longitudinal Temporal Information Modified Dates and Retain Patient Characteristics.
* Patient Name and Patient ID → the per-project pseudonym ``PLR-<12 hex>`` (keyed hash of the
  original Patient ID with the project secret: stable across uploads, not reversible).
* All UIDs (UI), except DICOM-registered ones (root ``1.2.840.10008.``), remapped to
  ``2.25.<128-bit keyed hash>``: same original UID → same new UID within a project.
* Dates (DA) and the date part of date-times (DT) shifted back by a per-patient offset of
  1–3650 days (keyed hash of the original Patient ID), also outside the table; times are kept.
* Beyond the table: every other person name emptied; free text (LT, ST, UT) and unknown-VR
  (UN) elements removed; private tags, overlay (60xx) and curve (50xx) groups removed; code
  items of private or local coding schemes (``99…``, ``L``, ``LOCAL``) removed from sequences;
  remaining LO/SH/UC/AE text in which the original patient ID or name appears as a word
  removed. The file meta header is rebuilt and the preamble zeroed.
* Attributes needed to decode or interpret the pixels (``PROTECTED_TAGS``) are never touched.
* Burned-in Annotation is read before anything changes and reported (YES/NO/UNKNOWN) so the
  series can be flagged; pixels are not altered.
* Patient Identity Removed = YES, De-identification Method and its code sequence are written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from .deid_profile import ANNEX_E_EDITION, PROTECTED_TAGS, Action, rule_for

logger = logging.getLogger(__name__)

UID_ROOT = "2.25."
DICOM_UID_ROOT = "1.2.840.10008."
PSEUDONYM_PREFIX = "PLR-"
MAX_DATE_SHIFT_DAYS = 3650
DEID_METHOD = f"Pleura: PS3.15 E.1-1 ({ANNEX_E_EDITION}); keyed UIDs; dates shifted"
DUMMY_TEXT = "ANONYMIZED"

FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UN"})
WORD_TEXT_VRS = frozenset({"LO", "SH", "UC", "AE"})
TEXT_DUMMY_VRS = frozenset({"AE", "CS", "LO", "SH", "LT", "ST", "UT", "UC", "PN", "UR"})
NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
BINARY_OR_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "OB", "OW", "OF", "OD", "OL", "OV"})
LOCAL_CODING_SCHEMES = frozenset({"L", "LOCAL"})
META_KEPT = ("TransferSyntaxUID",)


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


def identity_pattern(ds: Dataset) -> re.Pattern[str] | None:
    """Whole-word pattern of the original patient ID, name and name parts (≥ 3 characters).

    Whole words only, so that a name part such as ``ONO`` or ``PHIL`` does not match
    ``MONOCHROME2`` or ``Philips``.
    """
    name = str(ds.get("PatientName", "") or "").strip()
    tokens = {str(ds.get("PatientID", "") or "").strip(), name}
    tokens.update(part.strip() for part in re.split(r"[\^=\s]+", name))
    words = sorted((re.escape(t.lower()) for t in tokens if len(t) >= 3), key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<![^\W_])(?:" + "|".join(words) + r")(?![^\W_])")  # letters/digits delimit words


def _map_values(value: Any, func: Any) -> Any:
    if isinstance(value, (list, MultiValue)):
        return [func(str(v)) for v in value]
    return func(str(value)) if value not in (None, "") else value


def _is_local_code(item: Dataset) -> bool:
    """A code item of a private (``99…``) or local coding scheme: its meaning is free text."""
    scheme = str(item.get("CodingSchemeDesignator", "") or "").strip().upper()
    return scheme.startswith("99") or scheme in LOCAL_CODING_SCHEMES


class _Deidentifier:
    """Applies the rules to a dataset and its sequence items, in place."""

    def __init__(self, secret: str, offset: int, identity: re.Pattern[str] | None) -> None:
        self.secret = secret
        self.offset = offset
        self.identity = identity

    def clean(self, ds: Dataset) -> None:
        """De-identify every element of ``ds`` (recursing into sequences)."""
        for elem in list(ds):
            self._element(ds, elem)

    def _element(self, ds: Dataset, elem: DataElement) -> None:
        tag = int(elem.tag)
        if tag in PROTECTED_TAGS:
            if elem.VR == "UI":
                elem.value = _map_values(elem.value, self._uid)
            return
        if elem.tag.is_private or (tag >> 24) in (0x50, 0x60):
            del ds[elem.tag]
            return
        rule = rule_for(tag)
        action = rule.action if rule is not None else self._default_action(elem)
        if action is Action.REMOVE:
            del ds[elem.tag]
        elif action is Action.EMPTY:
            elem.value = Sequence() if elem.VR == "SQ" else (None if elem.VR in BINARY_OR_NUMBER_VRS else "")
        elif action is Action.DUMMY:
            self._dummy(ds, elem)
        elif action is Action.REMAP_UID:
            elem.value = _map_values(elem.value, self._uid)
        elif action is Action.SHIFT_DATE:
            elem.value = _map_values(elem.value, self._shift)
        elif elem.VR == "SQ":  # KEEP or CLEAN_ITEMS: the items are de-identified with the same rules
            self._sequence(elem)
        elif self._names_patient(elem):  # kept text that still names the patient
            del ds[elem.tag]

    def _default_action(self, elem: DataElement) -> Action:
        """Rules beyond the table for attributes it does not list."""
        if elem.VR in FREE_TEXT_VRS:
            return Action.REMOVE
        if elem.VR == "PN":
            return Action.EMPTY
        if elem.VR == "UI":
            return Action.REMAP_UID
        if elem.VR in ("DA", "DT"):
            return Action.SHIFT_DATE
        return Action.KEEP

    def _dummy(self, ds: Dataset, elem: DataElement) -> None:
        if elem.VR == "SQ":
            self._sequence(elem)
        elif elem.VR == "UI":
            elem.value = _map_values(elem.value, self._uid)
        elif elem.VR in ("DA", "DT"):
            elem.value = _map_values(elem.value, self._shift)
        elif elem.VR in TEXT_DUMMY_VRS:
            elem.value = DUMMY_TEXT
        elif elem.VR in NUMBER_VRS:
            elem.value = 0
        else:  # binary (OB, OW…) and TM: no meaningful dummy; nothing of the original is kept
            del ds[elem.tag]

    def _sequence(self, elem: DataElement) -> None:
        for item in elem.value:
            self.clean(item)
        elem.value = Sequence([item for item in elem.value if not _is_local_code(item)])

    def _names_patient(self, elem: DataElement) -> bool:
        if self.identity is None or elem.VR not in WORD_TEXT_VRS or elem.value in (None, ""):
            return False
        values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
        return any(self.identity.search(str(v).lower()) for v in values)

    def _uid(self, uid: str) -> str:
        uid = uid.strip("\x00 ")
        if not uid or uid.startswith(DICOM_UID_ROOT):
            return uid
        return remap_uid(self.secret, uid)

    def _shift(self, value: str) -> str:
        return shift_dt(value, self.offset) if len(value.strip()) > 8 else shift_da(value, self.offset)


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
    _Deidentifier(secret, result.date_offset_days, identity_pattern(ds)).clean(ds)
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
    _rebuild_file_meta(ds)
    return result


def _rebuild_file_meta(ds: Dataset) -> None:
    """Keep only the transfer syntax of the received file meta (source AE titles, private
    information and the original SOP Instance UID go) and zero the preamble."""
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    for keyword in META_KEPT:
        if keyword in old:
            setattr(meta, keyword, old[keyword].value)
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
