"""Reading CT volumes and writing masks back in the input's geometry.

Readers return ``(volume, meta)`` (nnU-Net I/O contract). ``volume`` is a ``(D, H, W)``
float32 array of Hounsfield units in the *canonical* orientation used inside Pleura:
LPS, i.e. the W axis runs toward the patient's left, H toward posterior and D toward superior
(the usual radiological display of axial slices). ``meta`` keeps the original geometry so that
masks can be written back aligned with the input.

Supported inputs: a folder holding one DICOM CT series, NIfTI (``.nii``/``.nii.gz``), NRRD
(``.nrrd``/``.nhdr``) and MetaImage (``.mha``/``.mhd``).

A DICOM series is placed on a regular, orthogonal grid so that every voxel sits at its physical
position: a gantry-tilted (sheared) series is de-sheared in-plane, and missing slices are filled
by linear interpolation along the slice normal (both reported in ``meta.warnings``). Masks are
then written back on that grid, which may hold more slices than the series has files
(``meta.interpolated_slices`` lists the extra ones).

Why over 500 lines: reading and writing back share the geometry record (``CTMeta``) and the
grid a DICOM series is placed on; splitting them would spread one contract over two files.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from scipy import ndimage

from ml.formats import VOLUME_SUFFIXES

logger = logging.getLogger(__name__)

CANONICAL_ORIENTATION = "LPS"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_MISSING_SLICE_FACTOR = 1.5
_SHEAR_TOLERANCE_PX = 0.5  # in-plane slice offsets above this many pixels are de-sheared
_FILL_HU = -1024.0
_AIR_PERCENTILE = 1.0
_AIR_MAX_HU = -500.0


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
        source_slices: DICOM only: for each file, in order along the normal, ``(grid index, row
            shift, column shift)``: the input-grid slice nearest to it and the in-plane shift in
            pixels that de-shearing applied (see :func:`to_source_slices`).
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
    source_slices: tuple[tuple[int, float, float], ...] = ()

    @property
    def interpolated_slices(self) -> tuple[int, ...]:
        """Indices along the input grid's slice axis (DICOM: sorted along the normal) that no file
        holds: filled by interpolation over missing slices (empty for volume files)."""
        if not self.source_slices or self.reference is None:
            return ()
        held = {grid for grid, _, _ in self.source_slices}
        return tuple(j for j in range(self.reference.GetSize()[2]) if j not in held)

    @property
    def one_slice_per_file(self) -> bool:
        """Whether the input grid holds exactly the files' slices, unshifted (a regular series or a
        volume file): then :func:`to_source_slices` is the identity."""
        return not self.source_slices or (
            self.reference is not None and len(self.source_slices) == self.reference.GetSize()[2]
            and all(g == k and dr == 0.0 and dc == 0.0 for k, (g, dr, dc) in enumerate(self.source_slices)))

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
        CTReadError: the path is missing, of an unknown kind (a single DICOM file included), not a
            readable CT (a DICOM series of another modality, slices of differing geometry, pixel
            data no installed codec decodes), or not in Hounsfield units (no air below −500 HU).
    """
    path = Path(path)
    sources: tuple[tuple[int, float, float], ...] = ()
    if path.is_dir():
        image, warnings, sources = _read_dicom_series(path)
    elif path.is_file():
        _reject_single_dicom_file(path)
        image, warnings = _read_volume_file(path), []
    else:
        raise CTReadError(f"{path}: no such file or folder (expected a DICOM folder or a volume file)")
    volume, meta = _to_canonical(image, path, warnings)
    meta.source_slices = sources
    _check_hounsfield(volume, path)
    return volume, meta


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


def to_source_slices(labels: np.ndarray, meta: CTMeta) -> np.ndarray:
    """Labels on the input grid → one label slice per DICOM file, aligned with its pixels.

    The reader puts a series on a regular, orthogonal grid (missing slices interpolated, a tilted
    series de-sheared). A viewer that overlays a mask on the series' own images needs one slice
    per file instead: this picks each file's grid slice and undoes its de-shear shift (nearest
    neighbour). Volume-file inputs and regular series come back unchanged.

    Args:
        labels: ``(D, H, W)`` labels on the input grid (slices along the normal, Rows, Columns).
        meta: the :class:`CTMeta` of the read.

    Returns:
        ``(n_files, H, W)`` labels, files in order along the slice normal.
    """
    if meta.one_slice_per_file:
        return labels
    out = np.empty((len(meta.source_slices), *labels.shape[1:]), dtype=labels.dtype)
    for k, (grid, row_shift, column_shift) in enumerate(meta.source_slices):
        plane = labels[grid]
        if row_shift or column_shift:
            plane = ndimage.shift(plane, (-row_shift, -column_shift), order=0, mode="constant", cval=0)
        out[k] = plane
    return out


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


def _reject_single_dicom_file(path: Path) -> None:
    """A lone DICOM file is not a volume: point to the series folder instead.

    Raises:
        CTReadError: ``path`` is a DICOM file.
    """
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        return
    if not (path.suffix.lower() in DICOM_SUFFIXES or pydicom.misc.is_dicom(path)):
        return
    try:
        frames = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError):
        frames = 1
    if frames > 1:
        raise CTReadError(f"{path}: a multi-frame DICOM file ({frames} frames) is not supported; "
                          "convert it to a single-frame series folder or to NIfTI")
    raise CTReadError(f"{path}: a single DICOM file, not a volume; pass the folder holding all the "
                      "slices of the series instead")


def _check_hounsfield(volume: np.ndarray, path: Path) -> None:
    """Reject volumes whose values do not look like CT Hounsfield units.

    A chest CT always holds air (about −1000 HU) around or inside the patient, so the 1st
    percentile must lie below −500 HU; MR, PET, unrescaled CT or a crop without air do not.

    Raises:
        CTReadError: the 1st percentile of ``volume`` is above −500.
    """
    flat = volume.reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    low = float(np.percentile(sample, _AIR_PERCENTILE))
    if low > _AIR_MAX_HU:
        raise CTReadError(f"{path}: does not look like a CT in Hounsfield units (no air below "
                          f"{_AIR_MAX_HU:.0f} HU; 1st percentile {low:.0f}); expected a CT volume in HU")


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


def _read_dicom_series(
    folder: Path,
) -> tuple[sitk.Image, list[str], tuple[tuple[int, float, float], ...]]:
    """Read one DICOM CT series from a folder onto a regular, orthogonal grid.

    Slices are sorted by position along the slice normal. A gantry-tilted (sheared) series is
    de-sheared in-plane; missing slices are filled by linear interpolation along the normal, so
    every voxel sits at its physical position.

    Returns:
        The HU image (grid: origin at the first slice, directions row, column, normal), the
        warnings gathered while reading and, per file, ``(grid index, row shift, column shift)``
        (see :attr:`CTMeta.source_slices`).

    Raises:
        CTReadError: not one consistent CT series, or pixel data that cannot be decoded.
    """
    slices = _read_headers(folder)
    _check_consistent(folder, slices)
    orientation = np.array(slices[0].dataset.ImageOrientationPatient, dtype=float)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(s.position @ normal))
    offsets = np.stack([s.position for s in slices]) - slices[0].position
    distances = offsets @ normal
    if np.any(np.diff(distances) < 1e-3):
        raise CTReadError(f"{folder}: duplicate slice positions (expected one slice per position)")
    row_spacing, column_spacing = (float(v) for v in slices[0].dataset.PixelSpacing)
    volume = np.stack([_slice_hu(s) for s in slices]).astype(np.float32, copy=False)
    warnings: list[str] = []
    shifts = np.stack([offsets @ col / row_spacing, offsets @ row / column_spacing], axis=1)  # (D, 2) pixels
    sheared = bool(np.abs(shifts).max() > _SHEAR_TOLERANCE_PX)
    if sheared:
        volume = _deshear(volume, shifts)
        in_plane_mm = float(np.linalg.norm(offsets - np.outer(distances, normal), axis=1).max())
        warnings.append(f"gantry tilt of {_tilt_degrees(offsets, normal):.1f} degrees: slices were resampled "
                        f"onto an orthogonal grid (de-sheared by up to {in_plane_mm:.1f} mm in-plane)")
    volume, slice_spacing, file_index, gap_warning = _regular_slices(volume, distances)
    if gap_warning:
        warnings.append(gap_warning)
    if len(slices) == 1:
        slice_spacing = float(getattr(slices[0].dataset, "SliceThickness", None) or 1.0)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((column_spacing, row_spacing, slice_spacing))
    image.SetOrigin(tuple(float(v) for v in slices[0].position))
    image.SetDirection(tuple(np.stack([row, col, normal], axis=1).ravel().tolist()))
    sources = tuple((int(g), float(dr), float(dc)) if sheared else (int(g), 0.0, 0.0)
                    for g, (dr, dc) in zip(file_index, shifts))
    logger.info("read DICOM series %s: %d slices -> %d on the grid", folder, len(slices), volume.shape[0])
    return image, warnings, sources


def _read_headers(folder: Path) -> list[_Slice]:
    """The image slices of the folder's single CT series (pixel data not decoded yet).

    Raises:
        CTReadError: no slices, several series, a modality other than CT, or missing geometry tags.
    """
    slices: list[_Slice] = []
    series: set[str] = set()
    modalities: set[str] = set()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(file)
        except pydicom.errors.InvalidDicomError:
            logger.debug("skipping non-DICOM file %s", file)
            continue
        if "ImagePositionPatient" not in dataset or "PixelData" not in dataset:
            continue
        for keyword in ("ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if keyword not in dataset:
                raise CTReadError(f"{file}: DICOM slice without {keyword} (expected a CT image with its geometry)")
        series.add(str(getattr(dataset, "SeriesInstanceUID", "")))
        modalities.add(str(getattr(dataset, "Modality", "")) or "(none)")
        slices.append(_Slice(file, np.array(dataset.ImagePositionPatient, dtype=float), dataset))
    if not slices:
        raise CTReadError(f"{folder}: no DICOM image slices found (expected one CT series)")
    if len(series) > 1:
        raise CTReadError(f"{folder}: {len(series)} DICOM series found (expected exactly one)")
    if modalities != {"CT"}:
        raise CTReadError(f"{folder}: DICOM Modality {', '.join(sorted(modalities))} "
                          "(expected a CT series, Modality CT)")
    return slices


def _check_consistent(folder: Path, slices: list[_Slice]) -> None:
    """Require one slice size, one pixel spacing and one orientation across the series.

    Raises:
        CTReadError: naming the folder and the differing values (with a slice count for each).
    """
    checks = (
        ("size (Rows x Columns)", lambda d: f"{int(d.Rows)}x{int(d.Columns)}"),
        ("PixelSpacing (mm)", lambda d: _rounded(d.PixelSpacing)),
        ("orientation (ImageOrientationPatient)", lambda d: _rounded(d.ImageOrientationPatient)),
    )
    for name, describe in checks:
        counts = Counter(describe(s.dataset) for s in slices)
        if len(counts) > 1:
            found = "; ".join(f"{value} ({n} slice{'s' if n > 1 else ''})" for value, n in counts.most_common())
            raise CTReadError(f"{folder}: slices differ in {name}: {found} (expected one CT series with a single "
                              "geometry; separate the series or remove the odd slices)")


def _rounded(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v) + 0.0:.4f}" for v in values) + "]"


def _slice_hu(s: _Slice) -> np.ndarray:
    """``(H, W)`` HU of one slice, decoded by pydicom, else by GDCM (through SimpleITK).

    Raises:
        CTReadError: neither can decode the pixel data (e.g. JPEG Lossless without a codec).
    """
    dataset = s.dataset
    try:
        pixels = dataset.pixel_array.astype(np.float32)
    except (RuntimeError, ValueError, NotImplementedError) as error:
        return _slice_hu_gdcm(s, error)
    slope = float(getattr(dataset, "RescaleSlope", 1.0))
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0))
    return pixels * slope + intercept


def _slice_hu_gdcm(s: _Slice, pydicom_error: Exception) -> np.ndarray:
    """Decode a slice pydicom could not decode with GDCM; GDCM applies the rescale itself."""
    syntax = s.dataset.file_meta.get("TransferSyntaxUID", "unknown")
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(s.path))
    try:
        pixels = sitk.GetArrayFromImage(reader.Execute()).astype(np.float32)
    except RuntimeError as error:
        raise CTReadError(
            f"{s.path}: cannot decode the pixel data (transfer syntax {getattr(syntax, 'name', syntax)}, {syntax}) "
            f"with the installed codecs (pydicom: {_one_line(pydicom_error)}; GDCM: {_one_line(error)}); "
            "decompress the series first, e.g. `gdcmconv --raw IN.dcm OUT.dcm` or `dcmdjpeg IN.dcm OUT.dcm` "
            "for each file"
        ) from error
    expected = (int(s.dataset.Rows), int(s.dataset.Columns))
    if pixels.size != expected[0] * expected[1]:
        raise CTReadError(f"{s.path}: GDCM decoded {pixels.shape} pixels, expected Rows x Columns {expected}")
    logger.debug("%s: decoded with GDCM (transfer syntax %s)", s.path, syntax)
    return pixels.reshape(expected)


def _one_line(error: Exception, limit: int = 300) -> str:
    """An error message on one line, without SimpleITK's header line (which only names the call)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(line for line in lines if not line.startswith("Exception thrown in SimpleITK"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tilt_degrees(offsets: np.ndarray, normal: np.ndarray) -> float:
    """Angle between the slice normal and the line through the slice positions, in degrees."""
    steps = np.diff(offsets, axis=0)
    cosines = np.abs(steps @ normal) / np.linalg.norm(steps, axis=1)
    return float(np.degrees(np.arccos(np.clip(np.median(cosines), -1.0, 1.0))))


def _deshear(volume: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Move each slice by its in-plane offset from the first slice (linear, air outside).

    Args:
        volume: ``(D, H, W)`` HU, slices sorted along the normal.
        shifts: ``(D, 2)`` in-plane offsets of each slice's origin from the first slice's, in pixels
            along ``(H, W)`` (column direction, row direction).

    Returns:
        ``(D, H, W)`` HU where voxel ``(k, i, j)`` lies at ``IPP_0 + j·Δc·row + i·Δr·col + s_k·normal``.
    """
    out = np.empty_like(volume)
    for k, (slice_, shift) in enumerate(zip(volume, shifts)):
        out[k] = ndimage.shift(slice_, shift, order=1, mode="constant", cval=_FILL_HU)
    return out


def _regular_slices(
    volume: np.ndarray, distances: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, str]:
    """Put the slices on a regular grid along the normal, interpolating where slices are missing.

    A step longer than ``_MISSING_SLICE_FACTOR`` × the median step is a gap holding
    ``round(step / median) − 1`` missing slices. The grid has one position per file plus one per
    missing slice, evenly spaced from the first to the last file (so small jitter in the
    positions, e.g. rounded to 0.1 mm, is absorbed). Every file's slice is copied as it is to its
    own position; only the missing positions are interpolated, linearly between the files on
    either side by their true positions.

    Args:
        volume: ``(D, H, W)`` HU, slices sorted along the normal.
        distances: ``(D,)`` slice positions along the normal in mm, relative to the first.

    Returns:
        ``(volume, spacing_mm, file_index, warning)``: ``file_index`` is each file's grid index;
        the warning is empty when nothing was missing.
    """
    count = len(distances)
    if count < 2:
        return volume, 1.0, np.zeros(count, dtype=int), ""
    steps = np.diff(distances)
    median = float(np.median(steps))
    missing_after = np.where(steps > _MISSING_SLICE_FACTOR * median, np.rint(steps / median).astype(int) - 1, 0)
    file_index = np.concatenate([[0], np.cumsum(1 + missing_after)])
    size = int(file_index[-1]) + 1
    spacing = float(distances[-1]) / (size - 1)
    if size == count:
        return volume, spacing, file_index, ""
    out = np.empty((size, *volume.shape[1:]), dtype=np.float32)
    out[file_index] = volume
    held = set(file_index.tolist())
    interpolated = [j for j in range(size) if j not in held]
    for j in interpolated:
        after = int(np.searchsorted(file_index, j))  # the first file beyond position j
        before = after - 1
        position = j * spacing
        weight = (position - distances[before]) / (distances[after] - distances[before])
        out[j] = (1.0 - weight) * volume[before] + weight * volume[after]
    gaps = np.flatnonzero(missing_after).tolist()
    warning = (f"{int(missing_after.sum())} missing slice(s) after index(es) {gaps} (spacing {median:.2f} mm): "
               f"{len(interpolated)} position(s) interpolated linearly onto a regular {spacing:.2f} mm grid")
    return out, spacing, file_index, warning