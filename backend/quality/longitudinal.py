"""Longitudinal lung measures of a patient: per study date, right/left/total lung size from the
curated (else latest) mask, mean HU and emphysema index for CT, and the change since the first study.

CT: volumes in mL (stored with each revision, measured on the series' regular grid); mean HU and
emphysema index (LAA%: percent of lung voxels below -950 HU) over the mask's lung voxels, read from
the stored DICOM instances (``RescaleSlope``/``RescaleIntercept``) and kept in :class:`LungIntensity`.
X-ray: projected lung area in cm² where the pixel spacing is known (``None`` otherwise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from django.core.files.storage import default_storage

from annotation import services as annotation_services
from annotation.models import MaskRevision, RevisionStatus
from annotation.services import MODALITY_FAMILIES
from imaging.models import Instance, Patient

from .dashboard import Figure
from .models import LungIntensity

logger = logging.getLogger(__name__)

EMPHYSEMA_HU = -950.0
#: Revisions that never stand for a target's mask (someone's kept draft).
NOT_A_MASK = (RevisionStatus.DRAFT,)


class LungMeasureError(ValueError):
    """A stored image cannot be read as the mask's intensities."""


@dataclass
class StudyLungs:
    """One study's lung measures (``family``: ``"ct"`` or ``"cxr"``)."""

    study: Any
    family: str
    revision: MaskRevision
    curated: bool
    right: float | None
    left: float | None
    unit: str
    mean_hu: float | None = None
    emphysema_index: float | None = None

    @property
    def total(self) -> float | None:
        return None if self.right is None or self.left is None else self.right + self.left


def _family(modality: str) -> str | None:
    return next((name for name, codes in MODALITY_FAMILIES.items() if modality in codes), None)


def _sizes(revision: MaskRevision) -> tuple[float | None, float | None, str]:
    if revision.size_unit == "mL":
        return revision.right_size, revision.left_size, "mL"
    if revision.size_unit == "mm2":
        return revision.right_size / 100.0, revision.left_size / 100.0, "cm2"
    return None, None, "cm2"  # pixel spacing unknown: no area


def chosen_revisions(patient: Patient) -> list[tuple[Any, str, MaskRevision, bool]]:
    """Per study and modality family: ``(study, family, revision, curated)`` of the measured target.

    The target with a curated revision wins, then the one with more instances; its newest curated
    revision, else its newest revision (kept drafts excluded).
    """
    revisions = (MaskRevision.objects.filter(series__study__patient=patient).exclude(status__in=NOT_A_MASK)
                 .select_related("series__study").order_by("series__study__study_date", "series__study_id", "-number"))
    best: dict[tuple[int, str], dict[str, Any]] = {}
    per_target: dict[str, tuple[MaskRevision, bool]] = {}
    for revision in revisions:  # one patient: a handful of studies and targets
        curated = revision.status == RevisionStatus.APPROVED
        held = per_target.get(revision.target_key)
        if held is None or (curated and not held[1]):
            per_target[revision.target_key] = (revision, curated)
    for revision, curated in per_target.values():
        family = _family(revision.series.modality)
        if family is None:
            continue
        key = (revision.series.study_id, family)
        rank = (curated, revision.series.num_instances, -revision.series_id)
        if key not in best or rank > best[key]["rank"]:
            best[key] = {"rank": rank, "row": (revision.series.study, family, revision, curated)}
    rows = [entry["row"] for entry in best.values()]
    return sorted(rows, key=lambda r: (r[0].study_date is None, r[0].study_date, r[0].pk, r[1]))


def _instances_in_mask_order(revision: MaskRevision) -> list[Instance]:
    by_id = {i.pk: i for i in revision.series.instances.all()}
    ids = (revision.geometry or {}).get("instance_ids")
    if not ids or set(ids) != set(by_id):
        from modeling.inference import slice_order  # the proposal's own ordering (position along the normal)

        ids = slice_order(revision.series)
    return [by_id[i] for i in ids]


def hu_volume(revision: MaskRevision) -> np.ndarray:
    """The CT series' HU values ``(D, H, W)`` float32 in the mask's slice order.

    Raises:
        LungMeasureError: an instance has no readable pixel data of the series' size.
    """
    slices = []
    for instance in _instances_in_mask_order(revision):
        with default_storage.open(instance.file.name, "rb") as handle:
            try:
                dataset = pydicom.dcmread(handle)
                pixels = dataset.pixel_array.astype(np.float32)
            except (pydicom.errors.InvalidDicomError, AttributeError, ValueError) as exc:
                raise LungMeasureError(f"{instance.file.name}: no readable pixel data ({exc})") from exc
        slope, intercept = float(getattr(dataset, "RescaleSlope", 1) or 1), float(getattr(dataset, "RescaleIntercept", 0) or 0)
        slices.append(pixels * slope + intercept)
    volume = np.stack(slices)
    if tuple(volume.shape) != tuple(revision.shape):
        raise LungMeasureError(f"series {revision.series_id}: images {volume.shape} do not match the mask {revision.shape}")
    return volume


def lung_intensity(revision: MaskRevision) -> LungIntensity:
    """Mean HU and emphysema index of a CT revision's lungs (computed once, then read back)."""
    stored = LungIntensity.objects.filter(revision=revision).first()
    if stored is not None:
        return stored
    lung = annotation_services.read_labels(revision) > 0
    hu = hu_volume(revision)[lung]
    mean = float(hu.mean()) if hu.size else float("nan")
    laa = float(np.count_nonzero(hu < EMPHYSEMA_HU) * 100.0 / hu.size) if hu.size else 0.0
    measure, _ = LungIntensity.objects.get_or_create(
        revision=revision, defaults={"mean_hu": mean, "emphysema_index": laa, "threshold_hu": EMPHYSEMA_HU,
                                     "voxels": int(hu.size)})
    return measure


def patient_lungs(patient: Patient) -> list[StudyLungs]:
    """The patient's studies with their lung measures, oldest first."""
    rows = []
    for study, family, revision, curated in chosen_revisions(patient):
        right, left, unit = _sizes(revision)
        row = StudyLungs(study, family, revision, curated, right, left, unit)
        if family == "ct":
            try:
                intensity = lung_intensity(revision)
                row.mean_hu, row.emphysema_index = intensity.mean_hu, intensity.emphysema_index
            except LungMeasureError as exc:
                logger.warning("no lung intensity for revision %s: %s", revision.pk, exc)
        rows.append(row)
    return rows


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def figures(patient: Patient) -> list[Figure]:
    """One trend table per modality family (CT volumes in mL, X-ray areas in cm²) with the change since the first study."""
    rows = patient_lungs(patient)
    out = []
    for family, title, unit in (("ct", "CT lung volume (mL)", "mL"), ("cxr", "X-ray projected lung area (cm²)", "cm2")):
        mine = [r for r in rows if r.family == family]
        if not mine:
            continue
        first = next((r.total for r in mine if r.total is not None), None)
        table = []
        for r in mine:
            change = None if first is None or r.total is None else r.total - first
            pct = None if change is None or not first else change * 100.0 / first
            table.append([r.study.study_date.isoformat() if r.study.study_date else f"study {r.study.pk}",
                          r.study.pk, r.revision.pk, "curated" if r.curated else "latest", _r(r.right), _r(r.left),
                          _r(r.total), _r(change), _r(pct), _r(r.mean_hu, 1), _r(r.emphysema_index, 2)])
        columns = ["study_date", "study", "revision", "mask", f"right_{unit}", f"left_{unit}", f"total_{unit}",
                   f"change_{unit}", "change_pct", "mean_hu", "emphysema_index_pct"]
        if family == "cxr":
            table = [row[:-2] for row in table]
            columns = columns[:-2]
        out.append(Figure(f"lungs_{family}", title, columns, table,
                          {"type": "line", "x": "study_date", "series": [f"right_{unit}", f"left_{unit}", f"total_{unit}"]},
                          "from each study's curated mask, else its latest; change since the first study"
                          + ("; emphysema index: % lung voxels below -950 HU" if family == "ct" else
                             "; empty where the pixel spacing is unknown")))
    return out
