"""The DICOM PS3.15 Annex E action table with the options Pleura applies (data only).

The basic-profile column of Table E.1-1 comes from the maintained package ``dicom-anonymizer``
(Kitware; ``dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c``: every attribute of
the table in DICOM 2026c, grouped by action, scraped from the standard by that project). This
module only reads it; walking datasets is ``imaging.deid``'s job.

Options of Table E.1-1 applied on top of the basic profile (their column overrides it):

* Retain Longitudinal Temporal Information with Modified Dates (113107): every date and
  date-time of the table is shifted by the per-patient offset (action ``C``); times are kept
  (the shift is a whole number of days). Patient's Birth Date and Birth Time have no action in
  that column and keep the basic action (``Z``, ``X``).
* Retain Patient Characteristics (113108): the attributes with ``K`` in that column are kept.
  Its ``C`` rows (Allergies, Patient State, Special Needs, Pre-Medication: free text) cannot be
  cleaned mechanically and keep the basic action ``X``.

Where the basic profile leaves a choice, the stricter action is taken: ``Z/D`` → ``Z``;
``X/Z``, ``X/D``, ``X/Z/D`` → ``X``; ``X/Z/U*`` (Referenced/Source Image Sequence) → the
sequence is kept and its items are de-identified with the same table, so their UIDs are remapped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from importlib.metadata import version

from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import dictionary_VR, tag_for_keyword

ANNEX_E_EDITION = "2026c"
TABLE_PACKAGE = "dicom-anonymizer"
TABLE_SOURCE = f"{TABLE_PACKAGE} {version(TABLE_PACKAGE)} dicomfields_{ANNEX_E_EDITION}"


class Action(enum.Enum):
    """What happens to one attribute (Annex E action codes, plus the item rule of ``U*``)."""

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    REMAP_UID = "U"
    CLEAN_ITEMS = "U*"
    SHIFT_DATE = "C"


# dicom-anonymizer category → (code of Table E.1-1, action Pleura takes)
BASIC_CATEGORIES: dict[str, tuple[str, Action]] = {
    "D_TAGS": ("D", Action.DUMMY),
    "Z_TAGS": ("Z", Action.EMPTY),
    "X_TAGS": ("X", Action.REMOVE),
    "U_TAGS": ("U", Action.REMAP_UID),
    "Z_D_TAGS": ("Z/D", Action.EMPTY),
    "X_Z_TAGS": ("X/Z", Action.REMOVE),
    "X_D_TAGS": ("X/D", Action.REMOVE),
    "X_Z_D_TAGS": ("X/Z/D", Action.REMOVE),
    "X_Z_U_STAR_TAGS": ("X/Z/U*", Action.CLEAN_ITEMS),
}

# Table E.1-1 column "Rtn. Pat. Chars. Opt.": the rows with K.
PATIENT_CHARACTERISTICS_KEPT = (
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "PatientSexNeutered",
    "PregnancyStatus", "SmokingStatus",
)
# Date/time rows of the table without an action in the "Rtn. Long. Modif. Dates Opt." column.
NOT_LONGITUDINAL = ("PatientBirthDate", "PatientBirthTime")
DATE_VRS = frozenset({"DA", "DT"})

# Attributes needed to decode or interpret the pixels: never removed, emptied or rewritten by
# any rule (the Frame of Reference UID is remapped like every UID, consistently per project).
PROTECTED_KEYWORDS = (
    # Image Pixel module and frames
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio", "SmallestImagePixelValue",
    "LargestImagePixelValue", "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "ICCProfile", "ColorSpace", "PixelData", "FloatPixelData",
    "DoubleFloatPixelData", "PixelPaddingValue", "PixelPaddingRangeLimit", "NumberOfFrames",
    "FrameIncrementPointer", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
    # modality and VOI LUT
    "RescaleIntercept", "RescaleSlope", "RescaleType", "ModalityLUTSequence", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "VOILUTSequence", "PresentationLUTShape",
    # geometry
    "PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing", "PixelSpacingCalibrationType",
    "SliceThickness", "SpacingBetweenSlices", "ImagePositionPatient", "ImageOrientationPatient",
    "SliceLocation", "PatientPosition", "PatientOrientation", "ViewPosition",
    "EstimatedRadiographicMagnificationFactor", "DistanceSourceToDetector", "DistanceSourceToPatient",
    # what the image is
    "SOPClassUID", "Modality", "ImageType", "PresentationIntentType", "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign", "LossyImageCompression", "LossyImageCompressionRatio",
    "LossyImageCompressionMethod", "BurnedInAnnotation", "BodyPartExamined", "Laterality", "ImageLaterality",
    "ConvolutionKernel", "KVP", "InstanceNumber",
)


@dataclass(frozen=True)
class Rule:
    """The action for one attribute: ``code`` as printed in Table E.1-1, ``action`` as applied."""

    code: str
    action: Action
    reason: str


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword in de-identification rules: {keyword}")
    return tag


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:  # attributes newer than pydicom's dictionary (e.g. 2025 patient attributes)
        return ""


def _build() -> tuple[dict[int, Rule], list[tuple[int, int, int, int, Rule]]]:
    table = dicom_anonymization_database_selector(f"dicomfields_{ANNEX_E_EDITION}")
    exact: dict[int, Rule] = {}
    masked: list[tuple[int, int, int, int, Rule]] = []
    for category, (code, action) in BASIC_CATEGORIES.items():
        for entry in table[category]:
            rule = Rule(code, action, "basic profile")
            if len(entry) == 4:  # (group, element, group mask, element mask), e.g. 60xx,3000
                masked.append((*entry, rule))
            else:
                exact[(entry[0] << 16) | entry[1]] = rule
    not_longitudinal = {_tag(k) for k in NOT_LONGITUDINAL}
    for tag, rule in exact.items():
        vr = _vr(tag)
        if tag not in not_longitudinal and (vr in DATE_VRS or vr == "TM"):
            action = Action.SHIFT_DATE if vr in DATE_VRS else Action.KEEP
            exact[tag] = Rule(rule.code, action, "Retain Longitudinal Temporal Information Modified Dates")
    for keyword in PATIENT_CHARACTERISTICS_KEPT:
        tag = _tag(keyword)
        exact[tag] = Rule(exact[tag].code, Action.KEEP, "Retain Patient Characteristics")
    return exact, masked


RULES, MASKED_RULES = _build()
PROTECTED_TAGS = frozenset(_tag(k) for k in PROTECTED_KEYWORDS)


def rule_for(tag: int) -> Rule | None:
    """The Annex E rule for ``tag`` (with Pleura's options), or ``None`` when the table has none."""
    rule = RULES.get(tag)
    if rule is not None:
        return rule
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, group_mask, element_mask, masked in MASKED_RULES:
        if group & group_mask == g and element & element_mask == e:
            return masked
    return None
