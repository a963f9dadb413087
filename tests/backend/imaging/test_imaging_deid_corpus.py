"""De-identification against the crafted corpus (tests/backend/deid_corpus.py).

Each planted identifier must be gone from every element of the output (recursively, file meta
and preamble included) and from the stored bytes, with the action Annex E gives; attributes
needed to decode or interpret the pixels must be unchanged and the pixels must decode identically.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

import deid_corpus as corpus
from imaging.deid import DEID_METHOD, DUMMY_TEXT, date_offset_days, deidentify, pseudonym_for, remap_uid, shift_da, shift_dt
from imaging.models import Instance
from imaging.deid_profile import ANNEX_E_EDITION, PROTECTED_KEYWORDS, PROTECTED_TAGS, RULES, Action, rule_for
from imaging.services import dataset_bytes, ingest
from imaging.sources import SourceFile

SECRET = "corpus-secret"
MARKER = re.compile(r"zq\d\d", re.IGNORECASE)
# Not protected (not needed to decode) but must survive a colliding patient name all the same.
KEPT_AS_RECEIVED = ("Manufacturer", "ScanOptions", "PatientSex", "PatientAge", "SeriesNumber", "StudyTime")


def deidentified(data: bytes) -> tuple[Dataset, Dataset, bytes]:
    """(original, de-identified, stored bytes) for corpus file bytes."""
    original = corpus.read(data)
    ds = corpus.read(data)
    deidentify(ds, SECRET)
    return original, ds, dataset_bytes(ds)


@pytest.fixture(scope="module")
def full() -> tuple[Dataset, Dataset, bytes]:
    return deidentified(corpus.full_file())


def texts(ds: Dataset) -> Iterator[tuple[str, str]]:
    """(location, text) for every element of ``ds``: file meta, all nested items, the preamble."""
    meta = getattr(ds, "file_meta", None) or []
    for elem in [*meta, *ds.iterall()]:
        yield str(elem.tag), _text(elem)
    yield "preamble", (ds.preamble or b"").decode("latin-1")


def _text(elem: DataElement) -> str:
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if elem.VR == "SQ":
        return ""
    return "\\".join(str(v) for v in value) if isinstance(value, (list, pydicom.multival.MultiValue)) else str(value)


def locate(ds: Dataset, path: tuple[str | int, ...]) -> Any:
    """The element (or preamble bytes) at ``path``; ``None`` when it (or a parent) is gone."""
    node: Any = ds
    for step in path:
        if step == "preamble":
            return ds.preamble
        if step == "file meta":
            node = ds.file_meta
        elif isinstance(step, int):
            if step >= len(node.value):
                return None
            node = node.value[step]
        else:
            tag = Tag(int(step, 16)) if step.startswith("0x") else Tag(step)
            if tag not in node:
                return None
            node = node[tag]
    return node


def test_corpus_plants_at_least_40_attributes_all_present_in_the_input() -> None:
    plants = corpus.full_plants()
    original = corpus.read(corpus.full_file())
    assert len({plant.label for plant in plants}) >= 40
    for plant in plants:
        found = locate(original, plant.path)
        text = found.decode("latin-1") if isinstance(found, bytes) else _text(found)
        assert plant.phi in text, plant.label


def test_no_planted_marker_survives_anywhere(full: tuple[Dataset, Dataset, bytes]) -> None:
    _, ds, stored = full
    leaks = [(where, text) for where, text in texts(ds) if MARKER.search(text)]
    assert leaks == []
    assert not MARKER.search(stored.decode("latin-1"))
    assert not MARKER.search(pydicom.dcmread(io.BytesIO(stored)).preamble.decode("latin-1"))


@pytest.mark.parametrize("plant", corpus.full_plants(), ids=lambda p: p.label)
def test_planted_identifier(plant: corpus.Plant, full: tuple[Dataset, Dataset, bytes]) -> None:
    _, ds, stored = full
    assert all(plant.phi not in text for _, text in texts(ds)), plant.label
    assert plant.phi.encode() not in stored
    found = locate(ds, plant.path)
    if plant.expect == "absent":
        assert found is None
    elif plant.expect == "zeroed":
        assert found == b"\x00" * 128
    else:
        assert found is not None, plant.label
        assert found.value == _expected_value(plant), plant.label


def _expected_value(plant: corpus.Plant) -> Any:
    offset = date_offset_days(SECRET, f"id:{corpus.PATIENT_ID}")
    return {
        "empty": "",
        "dummy": DUMMY_TEXT,
        "pseudonym": pseudonym_for(SECRET, f"id:{corpus.PATIENT_ID}"),
        "replaced": DEID_METHOD,
        "remapped": remap_uid(SECRET, plant.phi),
        "shifted": shift_dt(plant.phi, offset) if len(plant.phi) > 8 else shift_da(plant.phi, offset),
    }[plant.expect]


def _assert_image_kept(original: Dataset, ds: Dataset, stored: bytes) -> None:
    for keyword in PROTECTED_KEYWORDS + KEPT_AS_RECEIVED:
        if keyword in original and keyword not in ("PixelData", "SOPClassUID"):
            assert keyword in ds, keyword
            assert ds[keyword].value == original[keyword].value, keyword
    assert ds.SOPClassUID == original.SOPClassUID
    reread = pydicom.dcmread(io.BytesIO(stored))
    assert reread.PhotometricInterpretation == original.PhotometricInterpretation
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)
    np.testing.assert_array_equal(reread.pixel_array, original.pixel_array)


def test_full_file_image_attributes_unchanged_and_pixels_identical(full: tuple[Dataset, Dataset, bytes]) -> None:
    _assert_image_kept(*full)


@pytest.mark.parametrize("index,name", list(enumerate(corpus.COLLIDING_NAMES)), ids=corpus.COLLIDING_NAMES)
def test_colliding_patient_name(index: int, name: str) -> None:
    original, ds, stored = deidentified(corpus.colliding_file(name, index))
    _assert_image_kept(original, ds, stored)
    assert str(ds.PatientName) == ds.PatientID == pseudonym_for(SECRET, f"id:{name.replace('^', '')}")
    for keyword in ("OtherPatientNames", "PatientBirthName", "StudyDescription", "ReferencedPatientSequence"):
        assert keyword not in ds, keyword
    assert not any(elem.tag.is_private for elem in ds.iterall())
    spaced = name.replace("^", " ")
    assert [where for where, text in texts(ds) if name in text or spaced in text] == []
    assert name.encode() not in stored and spaced.encode() not in stored


def test_annex_e_table_is_complete_and_spares_pixel_attributes() -> None:
    assert len(RULES) > 600  # Table E.1-1 of DICOM 2026c has ~650 rows
    issue_tags = (0x00400241, 0x00400242, 0x00400243, 0x00400010, 0x00400011, 0x00401005, 0x00402009, 0x00402010)
    assert all(rule_for(tag).action is Action.REMOVE for tag in issue_tags)
    assert rule_for(0x00100040).action is Action.KEEP  # Patient's Sex: Retain Patient Characteristics
    assert rule_for(0x00080020).action is Action.SHIFT_DATE  # Study Date: modified dates option
    assert rule_for(0x00100030).action is Action.EMPTY  # Birth Date: no option, Z
    assert rule_for(0x60003000).action is Action.REMOVE  # Overlay Data (60xx,3000), a masked row
    for tag in PROTECTED_TAGS:
        assert rule_for(tag) is None or rule_for(tag).action in (Action.KEEP, Action.REMAP_UID), hex(tag)


def test_deidentification_is_recorded(full: tuple[Dataset, Dataset, bytes]) -> None:
    _, ds, _ = full
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == DEID_METHOD and ANNEX_E_EDITION in DEID_METHOD
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100", "113107", "113108"]
    assert {item.CodingSchemeDesignator for item in ds.DeidentificationMethodCodeSequence} == {"DCM"}
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_standard_code_items_kept_local_ones_dropped(full: tuple[Dataset, Dataset, bytes]) -> None:
    _, ds, _ = full
    assert [(i.CodingSchemeDesignator, i.CodeValue) for i in ds.AnatomicRegionSequence] == [("SCT", "39607008")]
    assert len(ds.ProcedureCodeSequence) == 0
    assert ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning == "Finding"


def test_ingest_of_colliding_names_stores_decodable_instances(project: Any) -> None:
    """Through the real ingest path: stored files keep Photometric and decode to the same pixels."""
    files = [SourceFile(f"case{i}.dcm", corpus.colliding_file(name, i)) for i, name in enumerate(corpus.COLLIDING_NAMES[:3])]
    result = ingest(project, [files[0]])
    for source in files[1:]:
        ingest(project, [source])
    assert result.num_instances == 1
    instances = list(Instance.objects.filter(project=project))
    assert len(instances) == 3
    originals = {corpus.read(f.data).pixel_array.tobytes() for f in files}
    for instance in instances:
        with instance.file.open("rb") as handle:
            stored = pydicom.dcmread(handle)
        assert stored.PhotometricInterpretation == "MONOCHROME2"
        assert list(stored.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert stored.pixel_array.tobytes() in originals


@pytest.mark.realdata
def test_real_ct_series_image_attributes_and_pixels_unchanged(shared_data: Any) -> None:
    """The TCIA series lungdx_A0001 (64 slices): every slice keeps its image attributes and pixels."""
    paths = sorted((shared_data / "ct" / "dicom" / "lungdx_A0001").glob("*.dcm"))
    assert len(paths) == 64
    for path in paths:
        original, ds, stored = deidentified(path.read_bytes())
        _assert_image_kept(original, ds, stored)
        assert not any(elem.tag.is_private for elem in ds.iterall())
        assert str(original.PatientID).encode() not in stored
