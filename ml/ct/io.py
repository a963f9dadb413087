"""Reading CT volumes and writing masks back in the input's geometry.

Readers return ``(volume, meta)`` (nnU-Net I/O contract). ``volume`` is a ``(D, H, W)``
float32 array of Hounsfield units in the *canonical* orientation used inside Pleura:
LPS, i.e. the W axis runs toward the patient's left, H toward posterior and D toward superior
(the usual radiological display of axial slices). ``meta`` keeps the original geometry so that
masks can be written back aligned with the input.

Supported inputs: a folder holding one DICOM CT series, NIfTI (``.nii``/``.nii.gz``), NRRD
(``.nrrd``/``.nhdr``) and MetaImage (``.mha``/``.mhd``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

logger = logging.getLogger(__name__)

CANONICAL_ORIENTATION = "LPS"
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_MISSING_SLICE_FACTOR = 1.5
_TILT_TOLERANCE_DEG = 0.5


class CTReadError(ValueError):
    """A CT input could not be read as a volume with consistent geometry."""


@dataclass
class CTMeta:
    """Geometry of a CT volume and notes gathered while reading it.

    Attributes:
        source: the path that was read.
        shape: canonical array shape ``(D, H, W)``.
        spacing: canonical voxel spacing ``(sx, sy, sz)`` in mm (W, H, D order, SimpleITK style).
        origin: canonical origin in mm (LPS patient coordinates).
        direction: canonical direction cosines, 9 floats (row-major 3×3).
        original_direction: the input's direction cosines before reorientation.
        original_orientation: the input's orientation code, e.g. ``"LPS"`` or ``"RAS"``.
        warnings: problems found while reading (gantry tilt, missing slices, ...).
        reference: an empty image in the input's geometry, used to write masks back.
    """

    source: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    original_direction: tuple[float, ...]
    original_orientation: str
    warnings: list[str] = field(default_factory=list)
    reference: sitk.Image | None = field(default=None, repr=False)

    @property
    def spacing_dhw(self) -> tuple[float, float, float]:
        """Spacing in mm in array axis order ``(D, H, W)``."""
        sx, sy, sz = self.spacing
        return (sz, sy, sx)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(np.prod(self.spacing)) / 1000.0


def read_ct(path: str | Path) -> tuple[np.ndarray, CTMeta]:
    """Read a CT volume (DICOM folder, NIfTI, NRRD or MHA) in canonical LPS orientation.

    Args:
        path: a folder holding one DICOM series, or a volume file.

    Returns:
        ``(volume, meta)``: ``volume`` is ``(D, H, W)`` float32 in HU; ``meta`` its geometry.

    Raises:
        CTReadError: the path is missing, of an unknown kind, or not a readable CT.
    """
    path = Path(path)
    if path.is_dir():
        image, warnings = _read_dicom_series(path)
    elif path.is_file():
        image, warnings = _read_volume_file(path), []
    else:
        raise CTReadError(f"{path}: no such file or folder (expected a DICOM folder or a volume file)")
    return _to_canonical(image, path, warnings)


def read_label(path: str | Path, meta: CTMeta) -> np.ndarray:
    """Read a label volume on the grid of an already read CT, in the same canonical orientation.

    Args:
        path: label volume file (same grid as the CT of ``meta``).
        meta: the metadata returned by :func:`read_ct` for the matching CT.

    Returns:
        ``(D, H, W)`` uint8 labels.

    Raises:
        CTReadError: the label grid differs from the CT grid.
    """
    image = _read_volume_file(Path(path))
    if meta.reference is not None and image.GetSize() != meta.reference.GetSize():
        raise CTReadError(
            f"{path}: label grid {image.GetSize()} differs from the CT grid {meta.reference.GetSize()}"
        )
    image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    return sitk.GetArrayFromImage(image).astype(np.uint8, copy=False)


def write_mask(mask: np.ndarray, meta: CTMeta, path: str | Path) -> Path:
    """Write a canonical ``(D, H, W)`` label mask back in the geometry of the input CT.

    Args:
        mask: ``(D, H, W)`` integer labels in canonical orientation (as returned by processing).
        meta: the metadata of the CT the mask belongs to.
        path: output file; the suffix picks the format (``.nii.gz`` recommended).

    Returns:
        The written path.

    Raises:
        CTReadError: the mask shape does not match the CT.
    """
    path = Path(path)
    expected = meta.shape
    if mask.shape != expected:
        raise CTReadError(f"{path}: mask shape {mask.shape} does not match the CT grid {expected}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    image.SetSpacing(meta.spacing)
    image.SetOrigin(meta.origin)
    image.SetDirection(meta.direction)
    image = sitk.DICOMOrient(image, meta.original_orientation)
    if meta.reference is not None:
        image.CopyInformation(meta.reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    logger.info("wrote mask %s", path)
    return path


def _to_canonical(image: sitk.Image, path: Path, warnings: list[str]) -> tuple[np.ndarray, CTMeta]:
    orientation = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection())
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(image)
    canonical = sitk.DICOMOrient(image, CANONICAL_ORIENTATION) if orientation != CANONICAL_ORIENTATION else image
    volume = sitk.GetArrayFromImage(canonical)
    volume = volume.astype(np.float32, copy=False)
    meta = CTMeta(
        source=path,
        shape=tuple(int(n) for n in volume.shape),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in canonical.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in canonical.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in canonical.GetDirection()),
        original_direction=tuple(float(d) for d in image.GetDirection()),
        original_orientation=orientation,
        warnings=warnings,
        reference=reference,
    )
    for warning in warnings:
        logger.warning("%s: %s", path, warning)
    return volume, meta


def _read_volume_file(path: Path) -> sitk.Image:
    name = path.name.lower()
    if not name.endswith(VOLUME_SUFFIXES):
        raise CTReadError(f"{path}: unknown volume format (expected one of {', '.join(VOLUME_SUFFIXES)})")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise CTReadError(f"{path}: not a readable volume ({error})") from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CTReadError(f"{path}: expected a 3D single-channel volume, got {image.GetDimension()}D")
    return image


# --- DICOM -----------------------------------------------------------------------------------


@dataclass
class _Slice:
    path: Path
    position: np.ndarray
    dataset: pydicom.Dataset


def _read_dicom_series(folder: Path) -> tuple[sitk.Image, list[str]]:
    """Read one DICOM CT series from a folder, sorted by position along the slice normal."""
    slices = _read_headers(folder)
    orientation = np.array(slices[0].dataset.ImageOrientationPatient, dtype=float)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(s.position @ normal))
    warnings = _check_series_geometry(slices, normal)
    volume = np.stack([_slice_hu(s) for s in slices]).astype(np.float32, copy=False)
    distances = np.array([s.position @ normal for s in slices])
    steps = np.diff(distances)
    slice_spacing = float(np.median(steps)) if steps.size else float(getattr(slices[0].dataset, "SliceThickness", 1.0))
    pixel_spacing = [float(v) for v in slices[0].dataset.PixelSpacing]
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], slice_spacing))
    image.SetOrigin(tuple(float(v) for v in slices[0].position))
    image.SetDirection(tuple(np.stack([row, col, normal], axis=1).ravel().tolist()))
    logger.info("read DICOM series %s: %d slices", folder, len(slices))
    return image, warnings


def _read_headers(folder: Path) -> list[_Slice]:
    slices: list[_Slice] = []
    series: set[str] = set()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(file)
        except pydicom.errors.InvalidDicomError:
            logger.debug("skipping non-DICOM file %s", file)
            continue
        if "ImagePositionPatient" not in dataset or "PixelData" not in dataset:
            continue
        series.add(str(getattr(dataset, "SeriesInstanceUID", "")))
        slices.append(_Slice(file, np.array(dataset.ImagePositionPatient, dtype=float), dataset))
    if not slices:
        raise CTReadError(f"{folder}: no DICOM image slices found (expected one CT series)")
    if len(series) > 1:
        raise CTReadError(f"{folder}: {len(series)} DICOM series found (expected exactly one)")
    return slices


def _slice_hu(s: _Slice) -> np.ndarray:
    dataset = s.dataset
    pixels = dataset.pixel_array.astype(np.float32)
    slope = float(getattr(dataset, "RescaleSlope", 1.0))
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0))
    return pixels * slope + intercept


def _check_series_geometry(slices: list[_Slice], normal: np.ndarray) -> list[str]:
    """Detect gantry tilt, inconsistent orientation and missing slices; returns warnings."""
    warnings: list[str] = []
    orientations = {tuple(np.round(np.array(s.dataset.ImageOrientationPatient, dtype=float), 4)) for s in slices}
    if len(orientations) > 1:
        raise CTReadError(f"{slices[0].path.parent}: slices have {len(orientations)} different orientations")
    if len(slices) < 2:
        return warnings
    offsets = np.diff(np.stack([s.position for s in slices]), axis=0)
    steps = offsets @ normal
    if np.any(np.abs(steps) < 1e-3):
        raise CTReadError(f"{slices[0].path.parent}: duplicate slice positions (expected one slice per position)")
    cosines = np.abs(steps) / np.linalg.norm(offsets, axis=1)
    tilt = float(np.degrees(np.arccos(np.clip(np.median(cosines), -1.0, 1.0))))
    if tilt > _TILT_TOLERANCE_DEG:
        warnings.append(f"gantry tilt of {tilt:.1f} degrees: slices are sheared; geometry assumes no tilt")
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > _MISSING_SLICE_FACTOR * median)
    if gaps.size:
        missing = int(sum(round(steps[i] / median) - 1 for i in gaps))
        warnings.append(f"{missing} missing slice(s) after index(es) {gaps.tolist()} (spacing {median:.2f} mm)")
    return warnings
