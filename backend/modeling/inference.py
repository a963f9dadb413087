"""Run a registered model on one target and return a :class:`Proposal` (arrays + metadata).

This is the only module of the backend that imports ``ml`` (lazily, so that the web process
does not import torch). Models are loaded once per process: :func:`get_predictor` keeps a
module-level cache keyed by (model name, sha256, device); a Celery worker therefore loads each
model on its first job and reuses it for every later one.

Inputs come from the stored, de-identified DICOM files through the Django storage API:
an X-ray image is one instance ``(H, W)``; a CT series is read with :func:`ml.ct.io.read_ct`
into the canonical LPS ``(D, H, W)`` HU volume the CT model expects. Proposals are returned on
the *instance grid* (masks are written back in the input's geometry): ``(H, W)`` = (Rows,
Columns) of the image, and for CT ``(D, H, W)`` = slices ordered by position along the slice
normal (ascending), each slice in its stored row/column order.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from django.conf import settings
from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)

_PREDICTORS: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()
#: How many models this process has loaded (a test checks it stays at one per model).
LOAD_COUNT: dict[str, int] = {}


class ProposalInputError(ValueError):
    """The stored image of a target cannot be read as model input (not retried)."""


class ModelRunError(RuntimeError):
    """The model failed on a target and there is no fallback for the modality (not retried)."""


@dataclass
class Proposal:
    """A proposed label map and how it was made.

    Attributes:
        labels: ``(H, W)`` (X-ray) or ``(D, H, W)`` (CT, on the instance grid, see the module
            docstring) uint8; 0 background, 1 patient's right lung, 2 patient's left lung.
        modality: ``"cxr"`` or ``"ct"``.
        spacing: pixel/voxel spacing in mm in array axis order, ``None`` when unknown.
        geometry: JSON-serialisable geometry (CT: ``origin``, ``direction`` and ``spacing_xyz`` of
            the instance grid in LPS, SimpleITK order, and ``instance_ids`` in slice order; X-ray:
            rows, columns).
        method: ``"model"`` or ``"classical"`` (the CT fallback).
        confidence: the model's confidence score in [0, 1], if it gives one.
        entropy: mean normalised predictive entropy in [0, 1], if the model gives it.
        fallback_reason: why the fallback ran (the model's error), empty otherwise.
        duration_s: seconds spent reading the input and running the model.
        timings: seconds per stage (``read_s``, ``model_s``, ``regrid_s``, and the model's own stages).
    """

    labels: np.ndarray
    modality: str
    spacing: tuple[float, ...] | None
    geometry: dict[str, Any] = field(default_factory=dict)
    method: str = "model"
    confidence: float | None = None
    entropy: float | None = None
    fallback_reason: str = ""
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def device_name() -> str:
    """``PLEURA_DEVICE`` if set, else ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    configured = getattr(settings, "PLEURA_DEVICE", "") or os.environ.get("PLEURA_DEVICE", "")
    if configured:
        return configured
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def card_reference(name: str, weights_file: str = "") -> str:
    """What the ml registry should resolve: the card beside the weights when it exists, else the name.

    Shipped weights resolve by name; weights elsewhere (a training run) by their card's path.
    """
    if weights_file:
        path = Path(weights_file)
        path = path if path.is_absolute() else Path(settings.REPO_ROOT) / path
        card = path.with_suffix(".json")
        if card.is_file():
            return str(card)
    return name


def _load(reference: str, modality: str, device: str) -> Any:
    from ml import load_predictor

    return load_predictor(reference, device=device if modality == "cxr" else None)


def get_predictor(name: str, modality: str, sha256: str, weights_file: str = "", device: str | None = None) -> Any:
    """The loaded predictor for a model version, loading it on first use in this process.

    Args:
        name: model card name.
        modality: ``"cxr"`` or ``"ct"``.
        sha256: the registered checksum of the weights (part of the cache key).
        weights_file: the registered weights path (its card is loaded when it exists).
        device: torch device; :func:`device_name` when ``None``.
    """
    device = device or device_name()
    key = (name, sha256, device)
    with _LOCK:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            started = time.perf_counter()
            predictor = _load(card_reference(name, weights_file), modality, device)
            _PREDICTORS[key] = predictor
            LOAD_COUNT[name] = LOAD_COUNT.get(name, 0) + 1
            logger.info("loaded model %s on %s in pid %d (%.2f s)", name, device, os.getpid(),
                        time.perf_counter() - started)
    return predictor


# --- inputs -------------------------------------------------------------------------------------


def read_xray(instance: Any) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    """Pixel data of one stored X-ray instance.

    Returns:
        ``(image, photometric, spacing)``: ``image`` ``(H, W)`` float32 as stored (colour
        images averaged to grey), the photometric interpretation, and the pixel spacing
        ``(row, column)`` in mm or ``None`` when the file does not give one.

    Raises:
        ProposalInputError: the file holds no readable 2D image.
    """
    with default_storage.open(instance.file.name, "rb") as handle:
        try:
            dataset = pydicom.dcmread(handle)
            pixels = dataset.pixel_array
        except (pydicom.errors.InvalidDicomError, AttributeError, ValueError) as exc:
            raise ProposalInputError(f"{instance.file.name}: no readable pixel data ({exc})") from exc
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels, photometric = pixels[..., :3].mean(axis=-1), "MONOCHROME2"
    if pixels.ndim != 2:
        raise ProposalInputError(f"{instance.file.name}: expected one 2D image, got pixel array {pixels.shape}")
    series = instance.series
    spacing = None
    if series.pixel_spacing_row and series.pixel_spacing_column:
        spacing = (float(series.pixel_spacing_row), float(series.pixel_spacing_column))
    return pixels.astype(np.float32, copy=False), photometric, spacing


@contextmanager
def _series_folder(series: Any) -> Iterator[Path]:
    """A temporary folder holding the series' stored files (links when the storage is local)."""
    folder = Path(tempfile.mkdtemp(prefix=f"pleura-series-{series.pk}-"))
    try:
        for index, instance in enumerate(series.instances.order_by("id")):
            target = folder / f"{index:05d}.dcm"
            try:
                os.symlink(default_storage.path(instance.file.name), target)
            except NotImplementedError:
                with default_storage.open(instance.file.name, "rb") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def to_instance_grid(labels: np.ndarray, meta: Any) -> np.ndarray:
    """Canonical LPS ``(D, H, W)`` labels → the series' own grid: one slice per instance.

    Inverse of the reader's reorientation, then of its regular grid (no slice for positions it
    interpolated over missing instances; a gantry-tilted series' de-shear undone), so that each
    mask slice lies on its instance's pixels.

    Returns:
        ``(D, H, W)`` uint8 with D = instances by position along the normal, H = Rows, W = Columns.
    """
    import SimpleITK as sitk

    from ml import to_source_slices

    image = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=np.uint8))
    image.SetSpacing(meta.spacing)
    image.SetOrigin(meta.origin)
    image.SetDirection(meta.direction)
    if meta.original_orientation != "LPS":
        image = sitk.DICOMOrient(image, meta.original_orientation)
    return to_source_slices(sitk.GetArrayFromImage(image).astype(np.uint8, copy=False), meta)


def instance_grid_geometry(meta: Any) -> dict[str, Any]:
    """Spacing (x, y, z), origin and direction of the series' own grid, from the reader's reference.

    For a series with missing instances or a gantry tilt that grid is the reader's regular,
    de-sheared one, and the mask keeps one slice per instance: ``source_slices`` (per instance,
    ``[grid slice, row shift, column shift]``) and ``grid_depth`` say how the instances sit on the
    grid, so that volumes and NIfTI exports can be computed on it
    (:func:`annotation.labelmaps.to_regular_grid`).
    """
    reference = meta.reference
    if reference is None:
        return {"spacing_xyz": list(meta.spacing), "origin": list(meta.origin), "direction": list(meta.direction)}
    geometry = {"spacing_xyz": list(reference.GetSpacing()), "origin": list(reference.GetOrigin()),
                "direction": list(reference.GetDirection())}
    if not meta.one_slice_per_file:
        geometry["grid_depth"] = int(reference.GetSize()[2])
        geometry["source_slices"] = [[int(g), round(float(dr), 3), round(float(dc), 3)]
                                     for g, dr, dc in meta.source_slices]
    return geometry


def slice_order(series: Any) -> list[int]:
    """Instance ids in mask slice order: ascending position along the slice normal."""
    instances = list(series.instances.only("id", "image_position", "slice_location"))
    orientation = series.orientation or [1, 0, 0, 0, 1, 0]
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))

    def key(instance: Any) -> float:
        if instance.image_position:
            return float(np.dot(np.asarray(instance.image_position, float), normal))
        return float(instance.slice_location or 0.0)

    return [i.pk for i in sorted(instances, key=key)]


def read_ct(series: Any) -> tuple[np.ndarray, Any]:
    """The series as a canonical ``(D, H, W)`` HU volume and its :class:`ml.ct.io.CTMeta`.

    Raises:
        ProposalInputError: the series is not a readable, consistent CT volume.
    """
    from ml import CTReadError, read_ct as ml_read_ct

    with _series_folder(series) as folder:
        try:
            return ml_read_ct(folder)
        except CTReadError as exc:
            raise ProposalInputError(f"series {series.pk}: {exc}") from exc


# --- running ------------------------------------------------------------------------------------


def _score(result: Any) -> tuple[float | None, float | None]:
    confidence = getattr(result, "confidence", None)
    entropy = getattr(result, "entropy", getattr(result, "mean_entropy", None))
    return (None if confidence is None else float(confidence)), (None if entropy is None else float(entropy))


def propose_xray(instance: Any, name: str, sha256: str, weights_file: str = "") -> Proposal:
    """Run the X-ray model ``name`` on one instance.

    Raises:
        ProposalInputError: unreadable image.
        ModelRunError: the model failed (X-ray has no classical fallback).
    """
    started = time.perf_counter()
    image, photometric, spacing = read_xray(instance)
    timings = {"read_s": time.perf_counter() - started}
    predictor = get_predictor(name, "cxr", sha256, weights_file)
    mark = time.perf_counter()
    try:
        result = predictor.predict(image, photometric=photometric, spacing=spacing)
    except (RuntimeError, ValueError, MemoryError) as exc:
        raise ModelRunError(f"model {name} failed on instance {instance.pk}: {exc}") from exc
    timings["model_s"] = time.perf_counter() - mark
    labels = np.asarray(result.labels, dtype=np.uint8)
    if labels.shape != image.shape:
        raise ModelRunError(f"model {name} returned labels {labels.shape} for an image {image.shape}")
    confidence, entropy = _score(result)
    return Proposal(labels=labels, modality="cxr", spacing=spacing,
                    geometry={"rows": int(image.shape[0]), "columns": int(image.shape[1]),
                              "photometric": photometric},
                    confidence=confidence, entropy=entropy, duration_s=time.perf_counter() - started,
                    timings={k: round(v, 3) for k, v in timings.items()})


def propose_ct(series: Any, name: str, sha256: str, weights_file: str = "") -> Proposal:
    """Run the CT model ``name`` on a series; on a model error, fall back to the classical method.

    Raises:
        ProposalInputError: the series is not a readable CT volume.
    """
    from ml import segment_classical

    started = time.perf_counter()
    volume, meta = read_ct(series)
    timings = {"read_s": time.perf_counter() - started}
    spacing = tuple(float(s) for s in meta.spacing_dhw)
    geometry = {**instance_grid_geometry(meta), "canonical_orientation": "LPS",
                "original_orientation": meta.original_orientation, "instance_ids": slice_order(series),
                "warnings": list(meta.warnings)}
    grid_spacing = tuple(float(s) for s in reversed(geometry["spacing_xyz"]))
    try:
        predictor = get_predictor(name, "ct", sha256, weights_file)
        mark = time.perf_counter()
        result = predictor.predict(volume, spacing, meta.direction)
        timings["model_s"] = time.perf_counter() - mark
        timings.update({f"model.{k}": float(v) for k, v in (getattr(result, "timings", None) or {}).items()})
        labels = np.asarray(result.labels, dtype=np.uint8)
        if labels.shape != volume.shape:
            raise ModelRunError(f"model {name} returned labels {labels.shape} for a volume {volume.shape}")
        confidence, entropy = _score(result)
        method, reason = "model", ""
    except (ImportError, OSError, LookupError, RuntimeError, ValueError, MemoryError) as exc:
        reason = f"model {name} failed: {type(exc).__name__}: {exc}"
        logger.warning("series %s: %s; falling back to the classical CT method", series.pk, reason)
        mark = time.perf_counter()
        labels = segment_classical(volume, spacing, meta.direction).astype(np.uint8, copy=False)
        timings["classical_s"] = time.perf_counter() - mark
        confidence, entropy, method = None, None, "classical"
    mark = time.perf_counter()
    labels = to_instance_grid(labels, meta)
    timings["regrid_s"] = time.perf_counter() - mark
    return Proposal(labels=labels, modality="ct", spacing=grid_spacing, geometry=geometry, method=method,
                    confidence=confidence, entropy=entropy, fallback_reason=reason,
                    duration_s=time.perf_counter() - started, timings={k: round(v, 3) for k, v in timings.items()})
