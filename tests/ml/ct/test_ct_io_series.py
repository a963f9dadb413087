"""Synthetic DICOM CT series through ``read_ct``: sorting, rescale, geometry checks, gantry tilt,
missing slices, modality and codecs. Every series is written with pydicom into ``tmp_path``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLosslessSV1, generate_uid

from ml.ct.io import CTMeta, CTReadError, read_ct, to_source_slices, write_mask

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _stored_default(index: int) -> np.ndarray:
    """4×5 stored values 1000 + 10·index, with a bottom row of air (stored 0)."""
    stored = np.full((4, 5), 1000 + 10 * index, dtype=np.uint16)
    stored[-1] = 0
    return stored


def _write_series(folder: Path, positions: list[tuple[float, float, float]], *, slope: float = 1.0,
                  intercept: float = -1024.0, orientation: tuple[float, ...] = AXIAL,
                  pixel_spacing: tuple[float, float] = (0.7, 0.6), modality: str = "CT",
                  stored: Callable[[int], np.ndarray] = _stored_default) -> list[Path]:
    """A tiny CT series, file ``{index}.dcm`` per position, written in reverse order.

    Returns:
        The files in position-list order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    files = []
    for index, position in reversed(list(enumerate(positions))):
        pixels = stored(index)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{index}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID = modality, series_uid
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = pixels.astype("<u2").tobytes()
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)
        files.append(folder / f"{index}.dcm")
    return files[::-1]


def _edit(file: Path, **values: object) -> None:
    """Change some attributes of one written slice."""
    ds = pydicom.dcmread(file)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(file)


def _axial(count: int, step: float = 2.0) -> list[tuple[float, float, float]]:
    return [(0.0, 0.0, step * i) for i in range(count)]


def test_dicom_series_sorted_rescaled_and_checked(tmp_path: Path) -> None:
    _write_series(tmp_path / "ok", _axial(4), slope=2.0, intercept=-2048.0)
    volume, meta = read_ct(tmp_path / "ok")
    assert volume.shape == (4, 4, 5)
    assert volume[:, 0, 0].tolist() == [2.0 * (1000 + 10 * i) - 2048.0 for i in range(4)]
    assert meta.spacing_dhw == pytest.approx((2.0, 0.7, 0.6))
    assert meta.warnings == [] and meta.interpolated_slices == ()


def test_slices_of_different_sizes_are_rejected_naming_the_sizes(tmp_path: Path) -> None:
    files = _write_series(tmp_path / "sizes", _axial(4))
    _edit(files[2], Rows=6, PixelData=np.zeros((6, 5), "<u2").tobytes())
    with pytest.raises(CTReadError, match=r"sizes: slices differ in size \(Rows x Columns\): "
                                          r"4x5 \(3 slices\); 6x5 \(1 slice\)"):
        read_ct(tmp_path / "sizes")


@pytest.mark.parametrize(("change", "message"), [
    ({"PixelSpacing": [0.8, 0.6]}, r"PixelSpacing \(mm\): \[0\.7000, 0\.6000\] \(3 slices\); \[0\.8000, 0\.6000\]"),
    ({"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}, r"orientation \(ImageOrientationPatient\): "
                                                       r"\[1\.0000, 0\.0000, 0\.0000, 0\.0000, 1\.0000, 0\.0000\]"),
])
def test_slices_of_different_geometry_are_rejected(tmp_path: Path, change: dict, message: str) -> None:
    files = _write_series(tmp_path / "geometry", _axial(4))
    _edit(files[1], **change)
    with pytest.raises(CTReadError, match=r"geometry: slices differ in " + message):
        read_ct(tmp_path / "geometry")


def test_other_modalities_are_rejected(tmp_path: Path) -> None:
    _write_series(tmp_path / "mr", _axial(3), modality="MR")
    with pytest.raises(CTReadError, match=r"mr: DICOM Modality MR \(expected a CT series"):
        read_ct(tmp_path / "mr")


def test_series_without_air_is_not_taken_for_hounsfield_units(tmp_path: Path) -> None:
    _write_series(tmp_path / "raw", _axial(3), intercept=0.0)  # stored values as if they were HU
    with pytest.raises(CTReadError, match=r"raw: does not look like a CT in Hounsfield units \(no air below -500"):
        read_ct(tmp_path / "raw")


@pytest.mark.parametrize("name", ["1.dcm", "IM0001"])
def test_a_single_dicom_file_points_to_the_series_folder(tmp_path: Path, name: str) -> None:
    files = _write_series(tmp_path / "series", _axial(3))
    single = files[1].rename(tmp_path / name)
    with pytest.raises(CTReadError, match=rf"{name}: a single DICOM file, not a volume; pass the folder"):
        read_ct(single)


def _jpeg_lossless(file: Path, scratch: Path) -> None:
    """Re-encode one slice's pixel data as JPEG Lossless (SV1) with SimpleITK's GDCM writer."""
    ds = pydicom.dcmread(file)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(scratch))
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")
    writer.Execute(sitk.GetImageFromArray(ds.pixel_array))
    encoded = pydicom.dcmread(scratch)
    assert encoded.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    ds["PixelData"] = encoded["PixelData"]
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(file)


def test_jpeg_lossless_series_is_decoded(tmp_path: Path) -> None:
    plain = read_ct(_write_series(tmp_path / "plain", _axial(3))[0].parent)[0]
    files = _write_series(tmp_path / "jpeg", _axial(3))
    for file in files:
        _jpeg_lossless(file, tmp_path / "scratch.dcm")
    volume, _ = read_ct(tmp_path / "jpeg")
    assert np.array_equal(volume, plain)


def test_undecodable_pixel_data_names_file_syntax_and_the_remedy(tmp_path: Path) -> None:
    files = _write_series(tmp_path / "broken", _axial(3))
    ds = pydicom.dcmread(files[0])
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(files[0])
    with pytest.raises(CTReadError, match=r"0\.dcm: cannot decode the pixel data \(transfer syntax JPEG Lossless, "
                                          r".*decompress the series first, e\.g\. `gdcmconv --raw"):
        read_ct(tmp_path / "broken")


def _geometry(image: sitk.Image) -> tuple:
    return (image.GetSize(), np.round(image.GetOrigin(), 4).tolist(), np.round(image.GetSpacing(), 4).tolist(),
            np.round(image.GetDirection(), 5).tolist())


def test_missing_slice_is_interpolated_onto_the_complete_grid(tmp_path: Path) -> None:
    full_volume, full_meta = read_ct(_write_series(tmp_path / "full", _axial(7, 2.5))[0].parent)
    files = _write_series(tmp_path / "gap", _axial(7, 2.5))
    files[3].unlink()
    volume, meta = read_ct(tmp_path / "gap")
    assert any("1 missing slice(s) after index(es) [2]" in w and "1 position(s) interpolated" in w
               for w in meta.warnings)
    assert meta.interpolated_slices == (3,)
    assert volume.shape == full_volume.shape == (7, 4, 5)
    assert meta.origin == pytest.approx(full_meta.origin) and meta.spacing == pytest.approx(full_meta.spacing)
    assert meta.direction == pytest.approx(full_meta.direction)
    # the stored values grow linearly with the slice index, so the interpolated slice is exact
    assert np.allclose(volume, full_volume)
    mask = np.zeros(volume.shape, np.uint8)
    mask[5, 1, 2] = 1  # above the gap
    written = sitk.ReadImage(str(write_mask(mask, meta, tmp_path / "gap_mask.nii.gz")))
    reference = sitk.ReadImage(str(write_mask(mask, full_meta, tmp_path / "full_mask.nii.gz")))
    assert _geometry(written) == _geometry(reference)
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(reference))
    index = np.argwhere(sitk.GetArrayFromImage(written) == 1)[0][::-1]
    assert written.TransformIndexToPhysicalPoint([int(i) for i in index]) == pytest.approx((1.2, 0.7, 12.5))


def _physical(meta: CTMeta, index_dhw: np.ndarray) -> np.ndarray:
    """Canonical ``(d, h, w)`` (continuous) index → LPS mm through the meta's geometry."""
    direction = np.array(meta.direction).reshape(3, 3)
    return np.array(meta.origin) + direction @ (np.array(meta.spacing) * np.asarray(index_dhw)[::-1])


TILT = math.radians(15.0)


@pytest.mark.parametrize(("orientation", "table_step"), [
    # tilted image planes, table moving along z (how scanners write a tilted series)
    ((1.0, 0.0, 0.0, 0.0, math.cos(TILT), math.sin(TILT)), (0.0, 0.0, 5.0)),
    # axial image planes, positions drifting along y
    (AXIAL, (0.0, 5.0 * math.tan(TILT), 5.0)),
])
def test_gantry_tilt_is_desheared_to_physical_positions(tmp_path: Path, orientation: tuple[float, ...],
                                                        table_step: tuple[float, float, float]) -> None:
    count, marker_slice, marker_pixel, pixel_spacing = 6, 5, (4, 6), (0.8, 0.7)

    def stored(index: int) -> np.ndarray:
        pixels = np.full((16, 16), 24, np.uint16)  # -1000 HU
        if index == marker_slice:
            pixels[marker_pixel] = 2024  # +1000 HU
        return pixels

    start = np.array([-5.0, -6.0, 10.0])
    positions = [tuple(start + k * np.array(table_step)) for k in range(count)]
    _write_series(tmp_path / "tilt", positions, orientation=orientation, pixel_spacing=pixel_spacing, stored=stored)
    volume, meta = read_ct(tmp_path / "tilt")
    assert any(w.startswith("gantry tilt of 15.0 degrees: slices were resampled") for w in meta.warnings)
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    truth = (np.array(positions[marker_slice]) + marker_pixel[1] * pixel_spacing[1] * row
             + marker_pixel[0] * pixel_spacing[0] * col)
    weights = np.clip(volume + 1000.0, 0.0, None)
    centroid = (np.argwhere(weights > 0) * weights[weights > 0][:, None]).sum(axis=0) / weights.sum()
    error_in_grid = np.array(meta.direction).reshape(3, 3).T @ (_physical(meta, centroid) - truth)
    assert np.all(np.abs(error_in_grid) <= np.array(meta.spacing) / 2), error_in_grid
    # the grid is orthogonal and starts at the first slice; spacing along the normal is the projection
    assert meta.origin == pytest.approx(positions[0])
    assert meta.spacing_dhw[0] == pytest.approx(float(np.array(table_step) @ np.cross(row, col)))


def test_masks_go_back_to_one_slice_per_file_over_a_gap(tmp_path: Path) -> None:
    files = _write_series(tmp_path / "gap", _axial(7, 2.5))
    files[3].unlink()
    volume, meta = read_ct(tmp_path / "gap")  # axial LPS: the input grid is the canonical grid
    mask = np.zeros(volume.shape, np.uint8)
    mask[5, 1, 2] = 1
    mask[3] = 2  # the interpolated slice has no file to go to
    per_file = to_source_slices(mask, meta)
    assert per_file.shape == (6, 4, 5)
    assert per_file[4, 1, 2] == 1 and per_file.sum() == 1  # the 5th file sits at grid slice 5


def test_masks_go_back_onto_the_pixels_of_a_tilted_series(tmp_path: Path) -> None:
    marker_slice, marker_pixel = 5, (4, 6)

    def stored(index: int) -> np.ndarray:
        pixels = np.full((16, 16), 24, np.uint16)
        if index == marker_slice:
            pixels[marker_pixel] = 2024
        return pixels

    step = (0.0, 5.0 * math.tan(TILT), 5.0)
    positions = [tuple(np.array([-5.0, -6.0, 10.0]) + k * np.array(step)) for k in range(6)]
    _write_series(tmp_path / "tilt", positions, orientation=AXIAL, pixel_spacing=(0.8, 0.7), stored=stored)
    volume, meta = read_ct(tmp_path / "tilt")
    per_file = to_source_slices((volume > -600).astype(np.uint8), meta)
    assert per_file.shape == (6, 16, 16)
    hits = np.argwhere(per_file == 1)
    assert set(hits[:, 0].tolist()) == {marker_slice}
    assert np.abs(hits[:, 1:] - np.array(marker_pixel)).max() <= 1
    # a regular series comes back as it is
    plain_volume, plain_meta = read_ct(_write_series(tmp_path / "plain", _axial(4))[0].parent)
    labels = (plain_volume > 0).astype(np.uint8)
    assert to_source_slices(labels, plain_meta) is labels


def test_jittered_positions_keep_every_file_on_its_own_slice(tmp_path: Path) -> None:
    """Positions rounded to 0.1 mm at 0.625 mm spacing: no gap, no resampling, identity mapping."""
    positions = [(0.0, 0.0, round(0.625 * k, 1)) for k in range(40)]
    _write_series(tmp_path / "jitter", positions)
    volume, meta = read_ct(tmp_path / "jitter")
    assert volume.shape[0] == 40 and meta.warnings == [] and meta.interpolated_slices == ()
    assert [g for g, _, _ in meta.source_slices] == list(range(40))
    assert meta.spacing_dhw[0] == pytest.approx(positions[-1][2] / 39)
    labels = (np.arange(40)[:, None, None] * np.ones((1, 4, 5))).astype(np.uint8)
    assert to_source_slices(labels, meta) is labels


def test_a_gap_in_jittered_positions_interpolates_only_the_missing_slice(tmp_path: Path) -> None:
    positions = [(0.0, 0.0, round(0.625 * k, 1)) for k in range(40)]
    files = _write_series(tmp_path / "gap", positions)
    files[17].unlink()
    complete, _ = read_ct(_write_series(tmp_path / "full", positions)[0].parent)
    volume, meta = read_ct(tmp_path / "gap")
    assert volume.shape[0] == 40 and meta.interpolated_slices == (17,)
    assert [g for g, _, _ in meta.source_slices] == [k for k in range(40) if k != 17]
    held = [k for k in range(40) if k != 17]
    assert np.array_equal(volume[held], complete[held])  # the files' slices are copied, not blended
    # steps 2, 2, 2, 5, 2 mm: one missing slice (5 / 2 rounds to 2 steps), 6 files on 7 positions
    uneven = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 6.0, 11.0, 13.0)]
    _write_series(tmp_path / "uneven", uneven)
    volume, meta = read_ct(tmp_path / "uneven")
    assert volume.shape[0] == 7 and meta.interpolated_slices == (4,)
    assert [g for g, _, _ in meta.source_slices] == [0, 1, 2, 3, 5, 6]
