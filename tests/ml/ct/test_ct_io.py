"""CT reading and writing: real DICOM series, formats, orientation, geometry round-trip.

Synthetic DICOM series (sorting, geometry checks, tilt, missing slices, codecs) are in
``test_ct_io_series.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ml.ct.io import CTReadError, read_ct, read_label, write_mask


def _image(array: np.ndarray, spacing: tuple[float, float, float], direction: tuple[float, ...],
           origin: tuple[float, float, float] = (-100.0, 50.0, 20.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def _marker_volume() -> np.ndarray:
    """(D, H, W) = (6, 8, 10) int16 volume with one distinctive voxel."""
    array = np.full((6, 8, 10), -1000, dtype=np.int16)
    array[4, 2, 7] = 500
    return array


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_formats_are_read_in_canonical_orientation(tmp_path: Path, suffix: str) -> None:
    # RAS-like storage: x toward patient right, y anterior (flipped against LPS on two axes)
    direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(_image(_marker_volume(), (0.8, 0.9, 2.5), direction), str(path))
    volume, meta = read_ct(path)
    assert volume.dtype == np.float32 and volume.shape == (6, 8, 10)
    assert meta.original_orientation == "RAS"
    assert np.allclose(np.array(meta.direction).reshape(3, 3), np.eye(3))
    # flipped in H and W: the marker moves to the mirrored index
    assert volume[4, 8 - 1 - 2, 10 - 1 - 7] == 500
    assert meta.spacing_dhw == pytest.approx((2.5, 0.9, 0.8))


def test_mask_written_back_aligns_with_input(tmp_path: Path) -> None:
    direction = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # permuted and flipped axes
    source = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_image(_marker_volume(), (0.8, 0.9, 2.5), direction), str(source))
    volume, meta = read_ct(source)
    mask = (volume > 0).astype(np.uint8) * 2
    written = sitk.ReadImage(str(write_mask(mask, meta, tmp_path / "mask.nii.gz")))
    original = sitk.ReadImage(str(source))
    assert written.GetSize() == original.GetSize()
    assert np.allclose(written.GetDirection(), original.GetDirection(), atol=1e-5)
    assert np.allclose(written.GetOrigin(), original.GetOrigin(), atol=1e-4)
    assert np.allclose(written.GetSpacing(), original.GetSpacing(), atol=1e-5)
    written_array = sitk.GetArrayFromImage(written)
    assert np.array_equal(np.argwhere(written_array == 2), np.argwhere(sitk.GetArrayFromImage(original) == 500))
    assert np.array_equal(read_label(tmp_path / "mask.nii.gz", meta), mask)


def test_wrong_mask_shape_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "ct.mha"
    sitk.WriteImage(_image(_marker_volume(), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel())), str(source))
    _, meta = read_ct(source)
    with pytest.raises(CTReadError, match="does not match"):
        write_mask(np.zeros((2, 2, 2), np.uint8), meta, tmp_path / "m.nii.gz")


def test_unknown_inputs_raise_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(CTReadError, match="no such file"):
        read_ct(tmp_path / "absent.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CTReadError, match="unknown volume format"):
        read_ct(tmp_path / "notes.txt")
    with pytest.raises(CTReadError, match="no DICOM image slices"):
        read_ct(tmp_path)


@pytest.mark.parametrize("offset", [1100, 2000])  # no air at all: an unrescaled CT, or not a CT
def test_volume_without_air_is_not_taken_for_hounsfield_units(tmp_path: Path, offset: int) -> None:
    path = tmp_path / "not_hu.nii.gz"
    sitk.WriteImage(_image(_marker_volume() + offset, (1.0, 1.0, 1.0), tuple(np.eye(3).ravel())), str(path))
    with pytest.raises(CTReadError, match=r"not_hu\.nii\.gz: does not look like a CT in Hounsfield units "
                                          r"\(no air below -500 HU"):
        read_ct(path)


def test_real_dicom_series_lungdx(shared_data: Path) -> None:
    volume, meta = read_ct(shared_data / "ct" / "dicom" / "lungdx_A0001")
    assert volume.shape == (64, 512, 512)
    assert meta.spacing_dhw == pytest.approx((5.0, 0.841796875, 0.841796875))
    assert meta.original_orientation == "LPS" and meta.warnings == [] and meta.interpolated_slices == ()
    # HU from RescaleSlope/Intercept: air outside, lung parenchyma, mediastinal soft tissue
    assert volume[32, 5, 5] < -900
    assert float(np.median(volume[32, 192:232, 128:168])) < -700
    assert -150 < float(np.median(volume[32, 256:296, 236:276])) < 150
    positions = sorted(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
                       for p in (shared_data / "ct" / "dicom" / "lungdx_A0001").iterdir())
    assert meta.origin[2] == pytest.approx(positions[0])
