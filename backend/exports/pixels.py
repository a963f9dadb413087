"""Images and geometry of exported cases, read back through the storage API.

X-rays come out as ``(H, W)`` uint8 as stored (8-bit stored images unchanged; wider ones through
their VOI window, else their own min-max; MONOCHROME1 inverted so that air is dark). CT series
come out as ``(D, H, W)`` int16 HU with D = instances by position along the slice normal, the
label maps' own slice order.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pydicom
from django.core.files.storage import default_storage
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale, apply_voi_lut
from scipy import ndimage

from imaging.models import Instance, Series

from .errors import ExportError

logger = logging.getLogger(__name__)


def read_dataset(instance: Instance, pixels: bool = True) -> Dataset:
    """The stored (de-identified) DICOM dataset of an instance."""
    with default_storage.open(instance.file.name, "rb") as handle:
        return pydicom.dcmread(handle, stop_before_pixels=not pixels)


def xray_uint8(instance: Instance) -> np.ndarray:
    """``(H, W)`` uint8 grey image of an X-ray instance (see module docstring).

    Raises:
        ExportError: the stored file has no readable 2D image.
    """
    ds = read_dataset(instance)
    try:
        array = ds.pixel_array
    except (AttributeError, ValueError) as exc:
        raise ExportError(f"instance {instance.pk}: stored file has no readable pixel data ({exc})") from exc
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise ExportError(f"instance {instance.pk}: expected one 2D image, got pixel array {array.shape}")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if array.dtype == np.uint8:
        image = array
    else:
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            array = apply_voi_lut(apply_rescale(array, ds), ds)
        values = np.asarray(array, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        image = np.round((values - low) * (255.0 / (high - low))).astype(np.uint8) if high > low \
            else np.zeros(values.shape, np.uint8)
    if photometric == "MONOCHROME1":
        image = 255 - image
    return np.ascontiguousarray(image)


def ordered_instances(series: Series) -> list[Instance]:
    """Instances in label-map slice order (position along the normal, then instance number)."""
    return list(series.instances.order_by("slice_location", "instance_number", "id"))


def ct_volume(instances: list[Instance]) -> np.ndarray:
    """``(D, H, W)`` int16 HU volume of the instances, in the given order."""
    first = read_dataset(instances[0])
    volume = np.empty((len(instances), int(first.Rows), int(first.Columns)), np.int16)
    for k, instance in enumerate(instances):
        ds = first if k == 0 else read_dataset(instance)
        hu = apply_rescale(ds.pixel_array, ds)
        volume[k] = np.clip(np.round(hu), -32768, 32767).astype(np.int16) if hu.dtype.kind == "f" else hu
    return volume


def series_geometry(series: Series, instances: list[Instance]) -> dict[str, Any]:
    """Geometry of the instance grid from the stored series fields (LPS, SimpleITK order).

    ``origin`` is the first instance's ImagePositionPatient, ``direction`` the row, column and
    normal cosines as columns, ``spacing_xyz`` (column spacing, row spacing, slice spacing) mm.
    """
    orientation = np.asarray(series.orientation or [1, 0, 0, 0, 1, 0], float)
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    direction = np.stack([row, column, normal], axis=1)
    origin = instances[0].image_position if instances and instances[0].image_position else [0.0, 0.0, 0.0]
    return {"origin": [float(v) for v in origin], "direction": [float(v) for v in direction.ravel()],
            "spacing_xyz": [float(series.pixel_spacing_column or 1.0), float(series.pixel_spacing_row or 1.0),
                            float(series.slice_spacing or series.slice_thickness or 1.0)]}


def to_grid(volume: np.ndarray, geometry: dict[str, Any] | None) -> np.ndarray:
    """An image volume of one slice per instance → the series' regular grid (any dtype).

    Same rule as :func:`annotation.labelmaps.to_regular_grid` for label maps (nearest instance,
    de-shear shift, nearest neighbour), so that image and label stay voxel-aligned.
    """
    source = (geometry or {}).get("source_slices")
    if volume.ndim != 3 or not source:
        return volume
    depth = int(geometry.get("grid_depth") or 0)  # type: ignore[union-attr]
    grid = np.array([int(entry[0]) for entry in source])
    nearest = np.abs(np.arange(depth)[:, np.newaxis] - grid[np.newaxis, :]).argmin(axis=1)
    out = np.empty((depth, *volume.shape[1:]), dtype=volume.dtype)
    fill = int(volume.min())
    for j, k in enumerate(nearest.tolist()):
        _, row_shift, column_shift = source[k]
        out[j] = (ndimage.shift(volume[k], (row_shift, column_shift), order=0, mode="constant", cval=fill)
                  if row_shift or column_shift else volume[k])
    return out
