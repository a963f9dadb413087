"""CT reading and writing: real DICOM series, formats, orientation, geometry round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

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


def _write_series(folder: Path, positions: list[tuple[float, float, float]], slope: float = 1.0,
                  intercept: float = -1024.0) -> None:
    """Tiny CT series (4×5 pixels per slice), files written in reverse order."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for index, position in reversed(list(enumerate(positions))):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{index}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID = "CT", series_uid
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.6]
        ds.Rows, ds.Columns = 4, 5
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.full((4, 5), 1000 + 10 * index, dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)


def test_dicom_series_sorted_rescaled_and_checked(tmp_path: Path) -> None:
    _write_series(tmp_path / "ok", [(0.0, 0.0, 2.0 * i) for i in range(4)], slope=2.0, intercept=-2048.0)
    volume, meta = read_ct(tmp_path / "ok")
    assert volume.shape == (4, 4, 5)
    assert volume[:, 0, 0].tolist() == [2.0 * (1000 + 10 * i) - 2048.0 for i in range(4)]
    assert meta.spacing_dhw == pytest.approx((2.0, 0.7, 0.6))
    assert meta.warnings == []


def test_dicom_missing_slice_and_gantry_tilt_are_reported(tmp_path: Path) -> None:
    _write_series(tmp_path / "gap", [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 8.0, 10.0)])
    _, meta = read_ct(tmp_path / "gap")
    assert any("1 missing slice" in w for w in meta.warnings)
    _write_series(tmp_path / "tilt", [(0.0, 0.5 * i, 2.0 * i) for i in range(4)])  # ~14° tilt
    _, meta = read_ct(tmp_path / "tilt")
    assert any("gantry tilt of 14.0 degrees" in w for w in meta.warnings)


def test_real_dicom_series_lungdx(shared_data: Path) -> None:
    volume, meta = read_ct(shared_data / "ct" / "dicom" / "lungdx_A0001")
    assert volume.shape == (64, 512, 512)
    assert meta.spacing_dhw == pytest.approx((5.0, 0.841796875, 0.841796875))
    assert meta.original_orientation == "LPS" and meta.warnings == []
    # HU from RescaleSlope/Intercept: air outside, lung parenchyma, mediastinal soft tissue
    assert volume[32, 5, 5] < -900
    assert float(np.median(volume[32, 192:232, 128:168])) < -700
    assert -150 < float(np.median(volume[32, 256:296, 236:276])) < 150
    positions = sorted(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
                       for p in (shared_data / "ct" / "dicom" / "lungdx_A0001").iterdir())
    assert meta.origin[2] == pytest.approx(positions[0])
