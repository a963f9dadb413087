"""Dataset versions: snapshot curated revisions, freeze the patient-level split, export manifests for ``ml``.

A snapshot selects the curated revision of every target of a project and modality
(:func:`curated_revisions`), assigns each patient a split once (:func:`assign_splits`: a patient
already assigned keeps their split, so the test split is frozen; a new patient is placed by a
seeded hash of their pseudonym), hashes the content (:func:`content_hash`) and, when the content is
new, exports images, label maps and a manifest CSV that ``ml`` reads without Django
(:func:`export`), then stores the :class:`DatasetVersion` and its items in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from PIL import Image

from annotation import labelmaps
from annotation import services as annotation_services
from annotation.models import MaskRevision, RevisionSource, RevisionStatus
from imaging.models import Patient, Project
from modeling.inference import read_xray
from modeling.models import ModelModality
from modeling.services import DICOM_TO_MODEL

from .models import DatasetItem, DatasetVersion, Split, SplitAssignment

logger = logging.getLogger(__name__)

#: Review statuses that count as curated until the review stage lands (see curated_revisions).
CURATED_STATUSES: frozenset[str] = frozenset({RevisionStatus.APPROVED})  # annotation.services.curated_q
#: Name of the dataset folder inside an exported X-ray dataset (``<root>/<dataset>/images/<case>.png``).
XRAY_DATASET = "pleura"


class DatasetError(ValueError):
    """A snapshot cannot be taken or exported (names the project, modality and what is missing)."""


@dataclass(frozen=True)
class SnapshotItem:
    """One target of a snapshot before it is stored."""

    revision: MaskRevision
    patient_id: int
    split: str

    @property
    def case(self) -> str:
        return f"{self.revision.target_key.replace(':', '-')}-r{self.revision.number}"

    def line(self) -> str:
        return f"{self.revision.target_key},{self.revision.pk},{self.revision.checksum},{self.split}"


def dicom_modalities(modality: str) -> list[str]:
    """The DICOM modalities (``CR``, ``DX``; ``CT``) whose series a model modality segments."""
    if modality not in ModelModality.values:
        raise DatasetError(f"unknown modality {modality!r}: use one of {ModelModality.values}")
    return [dicom for dicom, model in DICOM_TO_MODEL.items() if model == modality]


def curated_revisions(project: Project, modality: str) -> list[MaskRevision]:
    """The curated revision of every target of a project and modality (newest per target).

    A target's newest person revision counts when it is approved in review (the platform's
    "curated", ``annotation.services.curated_q``); a later person revision that is not approved
    (returned, rejected, a new submission awaiting review) takes the target out until it is.
    """
    latest: dict[str, MaskRevision] = {}
    revisions = (MaskRevision.objects.filter(project=project, source=RevisionSource.PERSON,
                                             series__modality__in=dicom_modalities(modality))
                 .select_related("series__study").order_by("target_key", "number"))
    for revision in revisions:
        latest[revision.target_key] = revision
    return [r for _, r in sorted(latest.items()) if r.status in CURATED_STATUSES]


def split_rule() -> tuple[int, float, float]:
    """``(seed, test fraction, val fraction)`` from the settings."""
    seed = int(getattr(settings, "PLEURA_RETRAIN_SPLIT_SEED", 21))
    test = float(getattr(settings, "PLEURA_RETRAIN_TEST_FRACTION", 0.2))
    val = float(getattr(settings, "PLEURA_RETRAIN_VAL_FRACTION", 0.1))
    if not (0 <= test < 1 and 0 <= val < 1 and test + val < 1):
        raise DatasetError(f"split fractions test={test}, val={val} must be in [0, 1) with test + val < 1")
    return seed, test, val


def seeded_split(seed: int, test: float, val: float, project_id: int, modality: str, pseudonym: str) -> str:
    """The split a new patient gets: a uniform number from a seeded sha256 of the pseudonym, cut at the fractions."""
    digest = hashlib.sha256(f"{seed}:{project_id}:{modality}:{pseudonym}".encode()).hexdigest()
    u = int(digest[:12], 16) / float(16 ** 12)
    return Split.TEST if u < test else Split.VAL if u < test + val else Split.TRAIN


def assign_splits(project: Project, modality: str, patient_ids: Iterable[int]) -> dict[int, str]:
    """Each patient's split; patients without one get it now by the seeded rule and keep it for good.

    Call inside a transaction that holds the project's row lock (concurrent snapshots serialise).
    """
    ids = set(patient_ids)
    known = dict(SplitAssignment.objects.filter(project=project, modality=modality, patient_id__in=ids)
                 .values_list("patient_id", "split"))
    seed, test, val = split_rule()
    rule = f"sha256 seed={seed} test={test} val={val}"
    for patient in Patient.objects.filter(pk__in=ids - set(known)).order_by("pk"):
        split = seeded_split(seed, test, val, project.pk, modality, patient.pseudonym)
        SplitAssignment.objects.create(project=project, modality=modality, patient=patient, split=split, rule=rule)
        known[patient.pk] = split
    return known


def content_hash(items: Iterable[SnapshotItem]) -> str:
    """sha256 of the sorted ``target,revision id,label checksum,split`` lines."""
    return hashlib.sha256("\n".join(sorted(item.line() for item in items)).encode()).hexdigest()


def datasets_root() -> Path:
    """Where dataset versions are exported (``PLEURA_DATASETS_DIR``, default ``<PLEURA_DATA_DIR>/datasets``)."""
    return Path(getattr(settings, "PLEURA_DATASETS_DIR", None) or Path(settings.PLEURA_DATA_DIR) / "datasets")


def _xray_png(revision: MaskRevision) -> tuple[bytes, tuple[float, float] | None]:
    """The revision's X-ray as an 8-bit grey PNG (MONOCHROME1 inverted, full range kept) and its spacing."""
    pixels, photometric, spacing = read_xray(revision.instance)
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return grey_png(np.round(scaled * 255).astype(np.uint8)), spacing


def grey_png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8 array."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _export_xray(items: list[SnapshotItem], folder: Path) -> Path:
    (folder / XRAY_DATASET / "images").mkdir(parents=True)
    (folder / XRAY_DATASET / "labels").mkdir(parents=True)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "case", "split", "category", "width", "height", "lr_labels", "pixel_spacing_mm"])
        for item in items:
            png, spacing = _xray_png(item.revision)
            (folder / XRAY_DATASET / "images" / f"{item.case}.png").write_bytes(png)
            labels = annotation_services.read_labels(item.revision)
            (folder / XRAY_DATASET / "labels" / f"{item.case}.png").write_bytes(labelmaps.encode_png(labels))
            height, width = labels.shape
            writer.writerow([XRAY_DATASET, item.case, item.split, "", width, height, 1,
                             f"{spacing[0]} {spacing[1]}" if spacing else ""])
    return manifest


def _export_ct(items: list[SnapshotItem], folder: Path) -> Path:
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "ct", "labels", "lr_labels", "split"])
        for item in items:
            case_dir = folder / item.case / "ct"
            case_dir.mkdir(parents=True)
            for k, instance in enumerate(item.revision.series.instances.order_by("id")):
                with default_storage.open(instance.file.name, "rb") as src:
                    (case_dir / f"{k:05d}.dcm").write_bytes(src.read())
            data, _, _ = annotation_services.export(item.revision, "nifti")
            (folder / item.case / "lungs.nii.gz").write_bytes(data)
            writer.writerow([item.case, f"{item.case}/ct", f"{item.case}/lungs.nii.gz", 1, item.split])
    return manifest


def export(items: list[SnapshotItem], modality: str, folder: Path) -> Path:
    """Write images, label maps and ``manifest.csv`` under ``folder`` (atomically: a temp folder renamed).

    X-ray: ``<folder>/pleura/images/<case>.png``, ``<folder>/pleura/labels/<case>.png`` and the columns
    of ``ml.cxr.data``; CT: ``<folder>/<case>/ct/`` (DICOM files) and ``<folder>/<case>/lungs.nii.gz``
    with the columns of ``ml.ct.data``.

    Returns:
        The manifest path.
    """
    if folder.exists():
        return folder / "manifest.csv"
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        (_export_xray if modality == ModelModality.CXR else _export_ct)(items, staging)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / "manifest.csv"


def snapshot(project: Project, modality: str) -> tuple[DatasetVersion, bool]:
    """The dataset version of the project's curated labels now; ``(version, created)``.

    The same content returns the existing version (``created`` False). A new one is exported first,
    then stored with its items in one transaction; a failed export stores nothing.

    Raises:
        DatasetError: no curated label yet, or bad split settings.
    """
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        revisions = curated_revisions(project, modality)
        if not revisions:
            raise DatasetError(f"project {project.pk} has no curated {modality} label yet: nothing to snapshot")
        splits = assign_splits(project, modality, {r.series.study.patient_id for r in revisions})
    items = [SnapshotItem(r, r.series.study.patient_id, splits[r.series.study.patient_id]) for r in revisions]
    digest = content_hash(items)
    existing = DatasetVersion.objects.filter(project=project, modality=modality, sha256=digest).first()
    if existing is not None:
        return existing, False
    folder = datasets_root() / f"project-{project.pk}" / modality / digest[:16]
    manifest = export(items, modality, folder)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        existing = DatasetVersion.objects.filter(project=project, modality=modality, sha256=digest).first()
        if existing is not None:
            return existing, False
        number = (DatasetVersion.objects.filter(project=project, modality=modality)
                  .aggregate(n=Max("number"))["n"] or 0) + 1
        counts = {split: sum(1 for i in items if i.split == split) for split in Split.values}
        version = DatasetVersion.objects.create(project=project, modality=modality, sha256=digest, number=number,
                                                counts=counts, folder=str(folder), manifest=str(manifest))
        DatasetItem.objects.bulk_create([
            DatasetItem(dataset_version=version, revision=i.revision, target_key=i.revision.target_key,
                        patient_id=i.patient_id, split=i.split, label_sha256=i.revision.checksum, case=i.case)
            for i in items])
    logger.info("stored %s: %s", version, counts)
    return version, True
