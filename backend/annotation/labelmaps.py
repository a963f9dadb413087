"""Label-map codecs: PNG for 2D, gzip-compressed NIfTI for 3D; raw bytes for the viewer.

Arrays follow the Pleura convention: ``uint8`` with 0 background, 1 patient's right lung,
2 patient's left lung. 3D label maps are ``(D, H, W)`` on the series' instance grid (slices by
position along the normal, Rows × Columns); :func:`encode_nifti` writes them with a RAS affine
built from the stored geometry (LPS origin, direction, spacing) so that any NIfTI viewer
overlays them on the CT. For a series with missing instances or a gantry tilt the stored
geometry is the reader's regular, de-sheared grid and says where each instance sits on it
(``source_slices``, ``grid_depth``): :func:`to_regular_grid` puts the label map on that grid, and
exports and volumes are computed there (gaps filled from the nearest instance, shear undone).
"""

from __future__ import annotations

import gzip
import hashlib
import io
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

LABEL_VALUES = (0, 1, 2)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class LabelMapError(ValueError):
    """A label map has the wrong type, shape or values, or its stored bytes cannot be decoded."""


def validate(labels: np.ndarray, ndim: int | None = None) -> np.ndarray:
    """Check a label map and return it as C-contiguous ``uint8``.

    Raises:
        LabelMapError: wrong dimensionality, non-integer data or values outside {0, 1, 2}.
    """
    array = np.asarray(labels)
    if ndim is not None and array.ndim != ndim:
        raise LabelMapError(f"label map must have {ndim} dimensions, got shape {array.shape}")
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise LabelMapError(f"label map must be a non-empty 2D or 3D array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise LabelMapError(f"label map must hold integers, got {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > max(LABEL_VALUES)):
        raise LabelMapError(f"label values must be in {LABEL_VALUES}, found {int(array.min())}..{int(array.max())}")
    return np.ascontiguousarray(array, dtype=np.uint8)


def checksum(labels: np.ndarray) -> str:
    """SHA-256 of the shape and the raw C-order ``uint8`` bytes (independent of compression)."""
    digest = hashlib.sha256(repr(tuple(labels.shape)).encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def encode_png(labels: np.ndarray) -> bytes:
    """``(H, W)`` uint8 → lossless 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(validate(labels, 2), mode="L").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes → ``(H, W)`` uint8."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("L"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise LabelMapError(f"stored PNG label map cannot be decoded: {exc}") from exc


def affine_ras(geometry: dict[str, Any], spacing: tuple[float, ...] | None) -> np.ndarray:
    """RAS 4×4 affine of a ``(D, H, W)`` label map whose array axes (x, y, z) are (W, H, D).

    Args:
        geometry: ``origin`` (LPS mm), ``direction`` (9 floats, row-major, SimpleITK) and
            ``spacing_xyz``; missing entries default to identity / zero / ``spacing``.
        spacing: spacing in array order ``(D, H, W)`` mm, used when ``spacing_xyz`` is absent.
    """
    if geometry.get("spacing_xyz"):
        spacing_xyz = np.asarray(geometry["spacing_xyz"], dtype=float)
    elif spacing is not None:
        spacing_xyz = np.asarray(spacing[::-1], dtype=float)
    else:
        spacing_xyz = np.ones(3)
    direction = np.asarray(geometry.get("direction") or np.eye(3).ravel(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing_xyz[np.newaxis, :]
    lps[:3, 3] = np.asarray(geometry.get("origin") or (0.0, 0.0, 0.0), dtype=float)
    return _LPS_TO_RAS @ lps


def to_regular_grid(labels: np.ndarray, geometry: dict[str, Any] | None) -> np.ndarray:
    """One slice per instance → the series' regular grid, for exports and volumes.

    The inverse of the CT reader's :func:`ml.ct.io.to_source_slices`: each grid slice takes the
    label slice of the nearest instance (a slice interpolated over missing instances takes its
    neighbour's), shifted back by the de-shear shift of that instance (nearest neighbour). Label
    maps of regular series, and 2D ones, come back unchanged.

    Args:
        labels: ``(D, H, W)`` uint8, D = instances by position along the normal.
        geometry: the revision's geometry; only ``source_slices`` and ``grid_depth`` are read.

    Returns:
        ``(grid_depth, H, W)`` uint8 (``labels`` itself when there is nothing to do).

    Raises:
        LabelMapError: the geometry does not describe this label map.
    """
    source = (geometry or {}).get("source_slices")
    if labels.ndim != 3 or not source:
        return labels
    depth = int(geometry.get("grid_depth") or 0)  # type: ignore[union-attr]
    grid = np.array([int(entry[0]) for entry in source])
    if len(source) != labels.shape[0] or depth < labels.shape[0] or grid.min() < 0 or grid.max() >= depth:
        raise LabelMapError(f"geometry places {len(source)} instances on a grid of {depth} slices; "
                            f"the label map has {labels.shape[0]} slices")
    nearest = np.abs(np.arange(depth)[:, np.newaxis] - grid[np.newaxis, :]).argmin(axis=1)
    planes: dict[int, np.ndarray] = {}
    out = np.empty((depth, *labels.shape[1:]), dtype=np.uint8)
    for j, k in enumerate(nearest.tolist()):
        if k not in planes:
            _, row_shift, column_shift = source[k]
            planes[k] = (ndimage.shift(labels[k], (row_shift, column_shift), order=0, mode="constant", cval=0)
                         if row_shift or column_shift else labels[k])
        out[j] = planes[k]
    return out


def encode_nifti(labels: np.ndarray, geometry: dict[str, Any], spacing: tuple[float, ...] | None) -> bytes:
    """``(D, H, W)`` (or ``(H, W)``, stored as one slice) uint8 → ``.nii.gz`` bytes."""
    array = validate(labels)
    if array.ndim == 2:
        array = array[np.newaxis]
        spacing = (1.0, *spacing) if spacing is not None else None
    image = nib.Nifti1Image(np.transpose(array, (2, 1, 0)), affine_ras(geometry, spacing))
    image.header.set_data_dtype(np.uint8)
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=1)  # label maps are runs of 0/1/2: level 1 is enough


def decode_nifti(data: bytes) -> np.ndarray:
    """``.nii.gz`` bytes written by :func:`encode_nifti` → ``(D, H, W)`` uint8."""
    try:
        image = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    except (OSError, ValueError, EOFError) as exc:
        raise LabelMapError(f"stored NIfTI label map cannot be decoded: {exc}") from exc
    return np.ascontiguousarray(np.transpose(np.asarray(image.dataobj, dtype=np.uint8), (2, 1, 0)))


def encode(labels: np.ndarray, geometry: dict[str, Any], spacing: tuple[float, ...] | None) -> tuple[bytes, str]:
    """Storage encoding of a label map: ``(bytes, "png")`` for 2D, ``(bytes, "nii.gz")`` for 3D."""
    array = validate(labels)
    if array.ndim == 2:
        return encode_png(array), "png"
    return encode_nifti(array, geometry, spacing), "nii.gz"


def decode(data: bytes, fmt: str) -> np.ndarray:
    """Inverse of :func:`encode`."""
    if fmt == "png":
        return decode_png(data)
    if fmt == "nii.gz":
        return decode_nifti(data)
    raise LabelMapError(f"unknown label-map format {fmt!r} (expected 'png' or 'nii.gz')")


def side_sizes(labels: np.ndarray, spacing: tuple[float, ...] | None,
               geometry: dict[str, Any] | None = None) -> tuple[float, float, str]:
    """Right and left lung area (mm², 2D) or volume (mL, 3D); ``px`` counts when the spacing is unknown.

    A 3D label map of an irregular series is measured on its regular grid (:func:`to_regular_grid`),
    so that a gap between instances counts with the volume of the slices around it.
    """
    labels = to_regular_grid(labels, geometry)
    right, left = float(np.count_nonzero(labels == 1)), float(np.count_nonzero(labels == 2))
    if spacing is None:
        return right, left, "px"
    element = float(np.prod(spacing))
    if labels.ndim == 3:
        return right * element / 1000.0, left * element / 1000.0, "mL"
    return right * element, left * element, "mm2"
