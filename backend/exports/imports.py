"""Import of existing lung labels as revisions with source ``import``.

Accepted: DICOM SEG (read with highdicom), RTSTRUCT (contours rasterised on the series' own
pixel grid with Pillow) and NIfTI label volumes (nibabel) on the grid of a series. A SEG or
RTSTRUCT is matched to its series by the UIDs it references, taken as they are and as the
project's de-identification maps them (:func:`imaging.deid.remap_uid`), so labels made on the
original images find the de-identified copies. Segment / ROI names map to label values through
:data:`DEFAULT_MAPPING` plus a per-request mapping (value 0 ignores a name); any name left
unmapped is an error, so nothing is silently dropped.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from PIL import Image, ImageDraw

from annotation import labelmaps
from annotation.models import MaskRevision, RevisionSource, RevisionStatus
from annotation.services import TargetMismatchError, create_revision
from imaging.deid import remap_uid
from imaging.models import Instance, Project, Series

from . import pixels
from .errors import ImportLabelsError

logger = logging.getLogger(__name__)

#: Segment / ROI names (normalised: lower case, ``_`` and runs of spaces as one space) → label value.
DEFAULT_MAPPING: dict[str, int] = {
    **dict.fromkeys(("lung r", "right lung", "rt lung", "lung right", "r lung", "lung, right", "lungs right"), 1),
    **dict.fromkeys(("lung l", "left lung", "lt lung", "lung left", "l lung", "lung, left", "lungs left"), 2),
}


def normalise(name: str) -> str:
    """``"RT_LUNG "`` → ``"rt lung"``."""
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def mapping_with(overrides: dict[str, Any] | None) -> dict[str, int]:
    """The default mapping updated with ``overrides`` (names normalised; values 0, 1 or 2).

    Raises:
        ImportLabelsError: a value other than 0, 1, 2.
    """
    mapping = dict(DEFAULT_MAPPING)
    for name, value in (overrides or {}).items():
        if value not in (0, 1, 2) or isinstance(value, bool):
            raise ImportLabelsError(f"mapping[{name!r}] must be 1 (right lung), 2 (left lung) or 0 (ignore); got {value!r}")
        mapping[normalise(str(name))] = int(value)
    return mapping


def _map_names(names: dict[int, str], mapping: dict[str, int], what: str, file_name: str) -> dict[int, int]:
    unmapped = [n for n in names.values() if normalise(n) not in mapping]
    if unmapped:
        example = ", ".join(f'"{n}": 1' for n in unmapped[:2])
        raise ImportLabelsError(
            f"{file_name}: {what} {', '.join(repr(n) for n in unmapped)} not mapped to a lung; pass a mapping such as "
            f"{{{example}}} (1 right lung, 2 left lung, 0 ignore)")
    mapped = {number: mapping[normalise(n)] for number, n in names.items()}
    if not any(mapped.values()):
        raise ImportLabelsError(f"{file_name}: no {what} maps to a lung (every one is mapped to 0)")
    return mapped


def _candidates(project: Project, uid: str) -> list[str]:
    uid = str(uid).strip()
    return [uid, remap_uid(project.deid_secret, uid)] if project.deidentify else [uid]


def _instances_for(project: Project, sop_uids: list[str], file_name: str) -> dict[str, Instance]:
    """The project's instances referenced by ``sop_uids``, keyed by the UID as the file gives it."""
    lookup = {c: uid for uid in sop_uids for c in _candidates(project, uid)}
    found = {lookup[i.sop_instance_uid]: i for i in
             Instance.objects.filter(project=project, sop_instance_uid__in=list(lookup)).select_related("series")}
    if not found:
        raise ImportLabelsError(
            f"{file_name} references {len(sop_uids)} image(s), none of which is in project {project.name} "
            "(neither as given nor after the project's de-identification); import the images first")
    series = {i.series_id for i in found.values()}
    if len(series) > 1:
        raise ImportLabelsError(f"{file_name} references images of {len(series)} series; import one series per file")
    return found


def _store(series: Series, instance: Instance | None, labels: np.ndarray, user: Any, note: str) -> MaskRevision:
    geometry: dict[str, Any] = {}
    spacing: tuple[float, ...] | None = None
    if instance is None:
        geometry = pixels.series_geometry(series, pixels.ordered_instances(series))
        spacing = tuple(reversed(geometry["spacing_xyz"]))
    elif series.pixel_spacing_row and series.pixel_spacing_column:
        spacing = (float(series.pixel_spacing_row), float(series.pixel_spacing_column))
    try:
        return create_revision(series=series, instance=instance, labels=labels, source=RevisionSource.IMPORT,
                               status=RevisionStatus.SUBMITTED, spacing=spacing, geometry=geometry,
                               author=user, method="import", note=note)
    except (labelmaps.LabelMapError, TargetMismatchError) as exc:
        raise ImportLabelsError(f"{note}: {exc}") from exc


def _target(found: dict[str, Instance]) -> tuple[Series, list[Instance], Instance | None]:
    series = next(iter(found.values())).series
    if series.modality == "CT":
        return series, pixels.ordered_instances(series), None
    instance = next(iter(found.values()))
    return series, [instance], instance


def import_seg(project: Project, ds: pydicom.Dataset, file_name: str, mapping: dict[str, int], user: Any) -> MaskRevision:
    """A DICOM SEG → one revision of the series (CT) or image (X-ray) it references."""
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    values = _map_names(names, mapping, "segment(s)", file_name)
    sop_uids = sorted({str(uid) for _, _, uid in seg.get_source_image_uids()})
    found = _instances_for(project, sop_uids, file_name)
    series, instances, instance = _target(found)
    ours = {i.pk: uid for uid, i in found.items()}
    slices = [k for k, i in enumerate(instances) if i.pk in ours]
    numbers = [n for n, v in values.items() if v]
    array = seg.get_pixels_by_source_instance([ours[instances[k].pk] for k in slices], segment_numbers=numbers)
    labels = np.zeros((len(instances), series.rows, series.columns), np.uint8)
    if array.shape[1:3] != labels.shape[1:]:
        raise ImportLabelsError(f"{file_name}: frames of {array.shape[1]}x{array.shape[2]} do not fit the series' "
                                f"{series.rows}x{series.columns} images")
    for index, number in enumerate(numbers):
        labels[slices] = np.where(array[..., index] > 0, values[number], labels[slices])
    note = f"imported from DICOM SEG {file_name} (segments {', '.join(names[n] for n in numbers)})"
    return _store(series, instance, labels if instance is None else labels[0], user, note)


def _rtstruct_sop_uids(ds: pydicom.Dataset) -> list[str]:
    uids = set()
    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            for image in contour.get("ContourImageSequence", []):
                uids.add(str(image.ReferencedSOPInstanceUID))
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                uids.update(str(i.ReferencedSOPInstanceUID) for i in series.get("ContourImageSequence", []))
    return sorted(uids)


def _rasterise(points: np.ndarray, instance: Instance, series: Series) -> np.ndarray:
    """One closed planar contour (N, 3) in patient mm → ``(Rows, Columns)`` bool mask on the instance's pixels."""
    orientation = np.asarray(series.orientation or [1, 0, 0, 0, 1, 0], float)
    offset = points - np.asarray(instance.image_position or [0, 0, 0], float)
    columns = offset @ orientation[:3] / float(series.pixel_spacing_column or 1.0)
    rows = offset @ orientation[3:] / float(series.pixel_spacing_row or 1.0)
    canvas = Image.new("1", (series.columns, series.rows), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(columns.tolist(), rows.tolist())), fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def import_rtstruct(project: Project, ds: pydicom.Dataset, file_name: str, mapping: dict[str, int], user: Any) -> MaskRevision:
    """An RTSTRUCT → one revision: each mapped ROI's closed planar contours filled (even-odd) on their slices."""
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in ds.get("StructureSetROISequence", [])}
    if not names:
        raise ImportLabelsError(f"{file_name}: the RTSTRUCT has no StructureSetROISequence (no ROI)")
    values = _map_names(names, mapping, "ROI(s)", file_name)
    found = _instances_for(project, _rtstruct_sop_uids(ds), file_name)
    series, instances, instance = _target(found)
    locations = np.array([i.slice_location if i.slice_location is not None else np.nan for i in instances], float)
    normal = np.cross(*np.reshape(np.asarray(series.orientation or [1, 0, 0, 0, 1, 0], float), (2, 3)))
    tolerance = 0.5 * float(series.slice_spacing or series.slice_thickness or 1.0)
    labels = np.zeros((len(instances), series.rows, series.columns), np.uint8)
    for roi in ds.get("ROIContourSequence", []):
        value = values.get(int(roi.ReferencedROINumber), 0)
        if not value:
            continue
        masks: dict[int, np.ndarray] = {}
        for contour in roi.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            depth = float((points @ normal).mean())
            k = 0 if instance is not None else int(np.nanargmin(np.abs(locations - depth)))
            if instance is None and abs(locations[k] - depth) > tolerance:
                raise ImportLabelsError(f"{file_name}: a contour of ROI {names[int(roi.ReferencedROINumber)]!r} lies "
                                        f"at {depth:.1f} mm along the slice normal, on no slice of the series")
            masks[k] = masks.get(k, np.zeros(labels.shape[1:], bool)) ^ _rasterise(points, instances[k], series)
        for k, mask in masks.items():
            labels[k][mask] = value
    note = f"imported from RTSTRUCT {file_name} (ROIs {', '.join(names[n] for n, v in values.items() if v)})"
    return _store(series, instance, labels if instance is None else labels[0], user, note)


def import_nifti(project: Project, data: bytes, file_name: str, series_id: int | None, mapping: dict[str, Any] | None,
                 user: Any) -> MaskRevision:
    """A NIfTI label volume on the grid of ``series_id`` → one revision.

    The volume must have the series' shape (Columns, Rows, instances) and, for CT, its affine
    (the one Pleura's NIfTI exports carry) within 0.01 mm; values 0/1/2, or other integer values
    mapped by ``mapping`` (``{"5": 1, "6": 2}``; unmapped non-zero values are an error).
    """
    series = Series.objects.filter(pk=series_id, project=project).first() if series_id else None
    if series is None:
        raise ImportLabelsError(f"{file_name}: a NIfTI label volume needs the id of a series of project "
                                f"{project.name} ('series'); got {series_id!r}")
    try:
        image = nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        volume = np.asanyarray(image.dataobj)
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise ImportLabelsError(f"{file_name}: not a readable NIfTI file ({exc})") from exc
    instances = pixels.ordered_instances(series)
    volume = volume.reshape(volume.shape[:2] + (-1,)) if volume.ndim in (2, 3) else volume
    expected = (series.columns, series.rows, len(instances))
    if volume.shape != expected:
        raise ImportLabelsError(f"{file_name}: volume {volume.shape} does not match series {series.pk} "
                                f"(Columns x Rows x instances = {expected})")
    if series.modality == "CT":
        geometry = pixels.series_geometry(series, instances)
        reference = labelmaps.affine_ras(geometry, None)
        if not np.allclose(image.affine, reference, atol=0.01):
            raise ImportLabelsError(f"{file_name}: its affine does not put it on series {series.pk}'s grid "
                                    f"(expected {np.round(reference, 3).tolist()}, got {np.round(image.affine, 3).tolist()})")
    labels = _map_values(np.transpose(volume, (2, 1, 0)), mapping, file_name)
    note = f"imported from NIfTI {file_name}"
    return _store(series, None if series.modality == "CT" else instances[0], labels if series.modality == "CT" else labels[0],
                  user, note)


def _map_values(volume: np.ndarray, mapping: dict[str, Any] | None, file_name: str) -> np.ndarray:
    if not np.issubdtype(volume.dtype, np.integer) and not np.all(np.mod(volume, 1) == 0):
        raise ImportLabelsError(f"{file_name}: label values must be integers, got {volume.dtype}")
    values = np.asarray(volume).astype(np.int64)
    table = {0: 0, 1: 1, 2: 2} if not mapping else {0: 0, **{int(k): int(v) for k, v in mapping.items()}}
    present = [int(v) for v in np.unique(values)]
    unmapped = [v for v in present if v not in table]
    if unmapped:
        raise ImportLabelsError(f"{file_name}: label value(s) {unmapped} not mapped; pass a mapping such as "
                                f'{{"{unmapped[0]}": 1}} (1 right lung, 2 left lung, 0 ignore)')
    out = np.zeros(values.shape, np.uint8)
    for source, target in table.items():
        out[values == source] = target
    return out


def import_labels(*, project_id: int, name: str, data: bytes, user: Any, mapping: dict[str, Any] | None = None,
                  series_id: int | None = None) -> list[MaskRevision]:
    """Import one label file into a project (see module docstring).

    Raises:
        ImportLabelsError: unreadable or unsupported file, nothing referenced in the project, unmapped names.
    """
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        raise ImportLabelsError(f"project {project_id} does not exist")
    if mapping is not None and not isinstance(mapping, dict):
        raise ImportLabelsError('mapping must be a JSON object of names → 0, 1 or 2, e.g. {"RT LUNG": 1}')
    if name.lower().endswith((".nii", ".nii.gz")):
        return [import_nifti(project, data, name, series_id, mapping, user)]
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (pydicom.errors.InvalidDicomError, ValueError, EOFError) as exc:
        raise ImportLabelsError(f"{name}: neither DICOM (SEG, RTSTRUCT) nor NIfTI (.nii/.nii.gz) ({exc})") from exc
    modality = str(ds.get("Modality", ""))
    names = mapping_with(mapping)
    if modality == "SEG":
        return [import_seg(project, ds, name, names, user)]
    if modality == "RTSTRUCT":
        return [import_rtstruct(project, ds, name, names, user)]
    raise ImportLabelsError(f"{name}: DICOM modality {modality or '(none)'} cannot be imported; expected SEG or RTSTRUCT")
