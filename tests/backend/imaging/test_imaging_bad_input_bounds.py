"""Bounded memory for any input: declared sizes are checked before anything large is allocated.

Every case of ``tests/backend/malformed_corpus.py`` must be answered with its 4xx JSON (naming the
file or archive member) and leave nothing stored, and reading it must allocate (tracemalloc) far
less than what it declares. The per-request budget (``PLEURA_UPLOAD_MAX_INFLATED_BYTES``,
``PLEURA_UPLOAD_MAX_DECODED_BYTES``) is tested with small settings; legitimate RLE, JPEG,
multi-frame DICOM and scaled/float NIfTI still go through.
"""

from __future__ import annotations

import gzip
import io
import resource
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from backend_factories import make_dicom
from imaging.errors import IngestError
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from malformed_corpus import CASES, Case, zip_of
from test_imaging_bad_input import assert_rejected, uploader  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
# What reading one corpus file may allocate (Python and numpy allocations, tracemalloc peak).
# Before the checks these files allocated 0.15 to 8 GiB.
MAX_TRACED_BYTES = 128 * MIB
# Headroom of address space around each case, so that a regression fails with MemoryError
# instead of taking the machine's memory.
ADDRESS_SPACE_HEADROOM = 3 * 1024 * MIB


@contextmanager
def bounded_address_space(headroom: int) -> Iterator[None]:
    """Lower the soft RLIMIT_AS to the current size + ``headroom`` for the block, then restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        current = int(handle.read().split()[0]) * resource.getpagesize()
    limit = current + headroom if hard == resource.RLIM_INFINITY else min(current + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def corpus_bytes() -> dict[str, bytes]:
    return {case.name: case.build() for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_corpus_case_is_refused_with_its_4xx(
    case: Case, corpus_bytes: dict[str, bytes], uploader: Callable, _isolated_storage: Path
) -> None:
    response = uploader((case.filename, corpus_bytes[case.name]))
    assert_rejected(response, case.status, case.code, case.error_file, _isolated_storage)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_corpus_case_is_refused_before_any_large_allocation(
    case: Case, corpus_bytes: dict[str, bytes], project: Any
) -> None:
    data = corpus_bytes[case.name]
    tracemalloc.start()
    try:
        with bounded_address_space(ADDRESS_SPACE_HEADROOM), pytest.raises(IngestError) as caught:
            ingest(project, [SourceFile(case.filename, data)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == case.code
    assert peak < MAX_TRACED_BYTES, f"{case.name}: {peak / MIB:.0f} MiB allocated for a {len(data)}-byte file"


def test_decoded_budget_is_per_request_and_names_the_file_over_it(
    uploader: Callable, settings: Any, _isolated_storage: Path
) -> None:
    settings.PLEURA_UPLOAD_MAX_DECODED_BYTES = 200  # one 8x8 16-bit image (128 bytes) fits, two do not
    first, second = make_dicom(), make_dicom(z=2.0)
    response = uploader(("a.dcm", first), ("b.dcm", second))
    assert_rejected(response, 413, "upload_budget_exceeded", "b.dcm", _isolated_storage)
    assert "PLEURA_UPLOAD_MAX_DECODED_BYTES" in response.json()["detail"]
    assert uploader(("a.dcm", first)).status_code == 201  # a fresh budget per request
    assert uploader(("b.dcm", second)).status_code == 201


def test_inflated_budget_counts_every_archive_of_the_request(
    uploader: Callable, settings: Any, _isolated_storage: Path
) -> None:
    member = make_dicom()
    settings.PLEURA_UPLOAD_MAX_INFLATED_BYTES = len(member) + 10
    response = uploader(("one.zip", zip_of({"a.dcm": member})), ("two.zip", zip_of({"b.dcm": make_dicom(z=2.0)})))
    assert_rejected(response, 413, "upload_budget_exceeded", "two.zip/b.dcm", _isolated_storage)
    assert "PLEURA_UPLOAD_MAX_INFLATED_BYTES" in response.json()["detail"]


def test_nifti_volume_over_the_decoded_budget(uploader: Callable, settings: Any, _isolated_storage: Path) -> None:
    settings.PLEURA_UPLOAD_MAX_DECODED_BYTES = 1000
    raw = nib.Nifti1Image(np.zeros((16, 16, 4), dtype=np.int16), np.eye(4)).to_bytes()  # 2048 bytes as int16
    response = uploader(("ct.nii", raw))
    assert_rejected(response, 413, "upload_budget_exceeded", "ct.nii", _isolated_storage)


def test_image_pixel_cap_applies_to_dicom_frames(uploader: Callable, settings: Any, _isolated_storage: Path) -> None:
    settings.PLEURA_MAX_IMAGE_PIXELS = 63  # the factory's 8x8 frame has 64
    response = uploader(("a.dcm", make_dicom()))
    assert_rejected(response, 413, "image_too_large", "a.dcm", _isolated_storage)
    assert "PLEURA_MAX_IMAGE_PIXELS" in response.json()["detail"]


# --- Legitimate inputs still go through the checks ------------------------------------------

def _multiframe(transfer_syntax: str | None, frames: int = 3) -> tuple[bytes, np.ndarray]:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(rows=32, columns=48)))
    pixels = (np.arange(frames * 32 * 48).reshape(frames, 32, 48) % 3000 - 1000).astype(np.int16)
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), pixels


@pytest.mark.parametrize("transfer_syntax", [None, RLELossless], ids=["native", "rle"])
def test_valid_multiframe_dicom_is_stored_with_its_pixels(transfer_syntax: str | None, project: Any) -> None:
    data, pixels = _multiframe(transfer_syntax)
    result = ingest(project, [SourceFile("multi.dcm", data)])
    ds = pydicom.dcmread(result.series[0].instances.get().file.open("rb"))
    assert np.array_equal(ds.pixel_array, pixels)


def test_valid_jpeg_baseline_dicom_is_stored(project: Any) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(rows=40, columns=56)))
    buffer = io.BytesIO()
    gradient = (np.add.outer(np.arange(40), np.arange(56)) * 2).astype(np.uint8)
    Image.fromarray(gradient, mode="L").save(buffer, format="JPEG", quality=95)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    result = ingest(project, [SourceFile("jpeg.dcm", out.getvalue())])
    stored = pydicom.dcmread(result.series[0].instances.get().file.open("rb"))
    assert stored.pixel_array.shape == (40, 56)
    assert np.abs(stored.pixel_array.astype(int) - gradient).max() <= 8


def test_scaled_and_float_nifti_keep_their_values(project: Any) -> None:
    scaled = nib.Nifti1Image(np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2), np.eye(4))
    scaled.header.set_slope_inter(2.0, -1000.0)
    floats = nib.Nifti1Image((np.arange(4 * 3 * 2).reshape(4, 3, 2) * 0.37 - 5.0).astype(np.float32), np.eye(4) * 2)
    floats.affine[3, 3] = 1
    for name, image, expected, tolerance in (
        ("scaled.nii", scaled, np.arange(24).reshape(4, 3, 2) * 2.0 - 1000.0, 0.0),
        ("float.nii.gz", floats, np.arange(24).reshape(4, 3, 2) * 0.37 - 5.0, 1e-3),
    ):
        raw = image.to_bytes()
        result = ingest(project, [SourceFile(name, gzip.compress(raw) if name.endswith(".gz") else raw)])
        series = Series.objects.get(pk=result.series[0].pk)
        for k, instance in enumerate(series.instances.order_by("instance_number")):
            ds = pydicom.dcmread(instance.file.open("rb"))
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert np.allclose(hu, expected[:, :, k].T, atol=tolerance), name


def test_request_over_the_request_limit_is_refused_before_reading(
    uploader: Callable, settings: Any, _isolated_storage: Path
) -> None:
    settings.PLEURA_UPLOAD_MAX_REQUEST_BYTES = 12_000  # one 64x64 file (~9.4 KB) fits, two do not
    first, second = make_dicom(rows=64, columns=64), make_dicom(rows=64, columns=64, z=2.0)
    response = uploader(("a.dcm", first), ("b.dcm", second))
    assert_rejected(response, 413, "request_too_large", "(upload)", _isolated_storage)
    assert "PLEURA_UPLOAD_MAX_REQUEST_BYTES" in response.json()["detail"]
    assert uploader(("a.dcm", first)).status_code == 201
