"""Mask-revision services: append a revision, read its label map back.

Every revision is written through the Django storage API under
``masks/<project>/<target>/r<number>-<checksum[:16]>.<png|nii.gz>`` and announced with
:data:`annotation.signals.revision_created` in the same transaction (quality computes its
flags there).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.db.models import Exists, Max, OuterRef, Q, QuerySet

from imaging.models import Instance, Modality, Series, XRAY_MODALITIES

from . import labelmaps
from .models import MaskRevision, RevisionImmutableError, RevisionSource, RevisionStatus
from .signals import revision_created

logger = logging.getLogger(__name__)


class TargetMismatchError(ValueError):
    """A label map does not fit the image or series it is meant for."""


def target_key(series: Series, instance: Instance | None) -> str:
    """``"instance:<id>"`` for an X-ray image, ``"series:<id>"`` for a CT series."""
    return f"instance:{instance.pk}" if instance is not None else f"series:{series.pk}"


def _check_fits(labels: np.ndarray, series: Series, instance: Instance | None) -> None:
    if instance is not None:
        expected = (series.rows, series.columns)
        if labels.ndim != 2 or tuple(labels.shape) != expected:
            raise TargetMismatchError(
                f"label map {labels.shape} does not fit image {instance.pk} of {expected[0]}x{expected[1]} pixels")
    elif labels.ndim != 3:
        raise TargetMismatchError(f"a series label map must be (D, H, W), got {labels.shape}")
    elif tuple(labels.shape) != (series.num_instances, series.rows, series.columns):
        raise TargetMismatchError(
            f"label map {labels.shape} does not fit series {series.pk} "
            f"({series.num_instances} slices of {series.rows}x{series.columns})")


def create_revision(
    *,
    series: Series,
    instance: Instance | None,
    labels: np.ndarray,
    source: str,
    status: str,
    spacing: tuple[float, ...] | None = None,
    geometry: dict[str, Any] | None = None,
    parent: MaskRevision | None = None,
    author: Any = None,
    model_version: Any = None,
    proposal_job: Any = None,
    method: str = "",
    note: str = "",
    confidence: float | None = None,
    entropy: float | None = None,
) -> MaskRevision:
    """Append a revision to the target's lineage (numbers are assigned under a row lock).

    Args:
        labels: ``(H, W)`` for an X-ray image, ``(D, H, W)`` for a CT series (slices by position
            along the normal, Rows × Columns each); uint8 0/1/2.
        spacing: mm per array axis, ``None`` when unknown.
        parent: the revision this one corrects; the target's latest revision when ``None``.

    Raises:
        LabelMapError: bad label values or type.
        TargetMismatchError: the label map does not fit the target.
    """
    labels = labelmaps.validate(labels)
    _check_fits(labels, series, instance)
    geometry = dict(geometry or {})
    key = target_key(series, instance)
    data, fmt = labelmaps.encode(labels, geometry, spacing)
    digest = labelmaps.checksum(labels)
    right, left, unit = labelmaps.side_sizes(labels, spacing, geometry)
    name = ""
    try:
        with transaction.atomic():
            Series.objects.select_for_update().filter(pk=series.pk).first()  # serialises numbering per series
            latest = MaskRevision.objects.filter(target_key=key).aggregate(n=Max("number"))["n"] or 0
            if parent is None and latest:
                parent = current_revision(key)
            number = latest + 1
            name = default_storage.save(
                f"masks/{series.project_id}/{key.replace(':', '-')}/r{number}-{digest[:16]}.{fmt}", ContentFile(data))
            revision = MaskRevision.objects.create(
                project_id=series.project_id, series=series, instance=instance, target_key=key, number=number,
                parent=parent, source=source, author=author if getattr(author, "pk", None) else None,
                model_version=model_version, proposal_job=proposal_job, method=method, note=note, status=status,
                labelmap=name, labelmap_format=fmt, shape=list(labels.shape), dtype="uint8",
                spacing=list(spacing) if spacing is not None else None, geometry=geometry, checksum=digest,
                right_size=right, left_size=left, size_unit=unit, confidence=confidence, entropy=entropy,
            )
            revision_created.send(sender=MaskRevision, revision=revision, labels=labels)
    except BaseException:
        if name:  # the row was rolled back: leave no label-map file behind it
            default_storage.delete(name)
        raise
    logger.info("stored %s (%s, %d bytes %s)", revision, method or source, len(data), fmt)
    return revision


def current_revision(key: str) -> MaskRevision | None:
    """The target's current revision: its newest one that is not a side proposal, or ``None``."""
    return (MaskRevision.objects.filter(target_key=key).exclude(status__in=MaskRevision.SIDE_STATUSES)
            .order_by("-number").first())


def has_human_revision(key: str) -> bool:
    """Whether a person has stored a revision of the target (accepted, edited, submitted, rejected)."""
    return MaskRevision.objects.filter(target_key=key, source=RevisionSource.PERSON).exists()


def record_proposal(job: Any, proposal: Any) -> MaskRevision:
    """Store a model proposal (a :class:`modeling.inference.Proposal`) once per proposal job.

    On a target nobody has edited the proposal becomes the task's current revision. On a target with
    a person's revision it is stored as a *side* proposal (status ``side``): kept for comparison,
    its parent the current revision, and it never becomes current nor changes a person's revision.
    """
    existing = MaskRevision.objects.filter(proposal_job=job).first()
    if existing is not None:
        return existing
    note = ""
    if proposal.method != "model":
        note = f"{proposal.method} fallback: {proposal.fallback_reason}"
    key = target_key(job.series, job.instance)
    with transaction.atomic():
        Series.objects.select_for_update().filter(pk=job.series_id).first()  # a concurrent submit waits for us
        side = has_human_revision(key)
        parent = current_revision(key) if side else None
        if side:
            logger.info("%s has a person's revision: proposal of job %s stored as a side proposal", key, job.pk)
        return create_revision(
            series=job.series, instance=job.instance, labels=proposal.labels, source=RevisionSource.MODEL,
            status=RevisionStatus.SIDE if side else RevisionStatus.PROPOSED, spacing=proposal.spacing,
            geometry=proposal.geometry, parent=parent, model_version=job.model_version, proposal_job=job,
            method=proposal.method, note=note, confidence=proposal.confidence, entropy=proposal.entropy,
        )


def read_labels(revision: MaskRevision) -> np.ndarray:
    """The revision's label map, decoded and checked against its checksum.

    Raises:
        LabelMapError: the stored file is unreadable or does not match the recorded checksum.
    """
    with default_storage.open(revision.labelmap.name, "rb") as handle:
        labels = labelmaps.decode(handle.read(), revision.labelmap_format)
    if labelmaps.checksum(labels) != revision.checksum:
        raise labelmaps.LabelMapError(f"{revision.labelmap.name}: stored label map does not match its checksum")
    return labels


def export(revision: MaskRevision, fmt: str) -> tuple[bytes, str, str]:
    """A download of the label map: ``(bytes, content type, file name)`` for ``png`` or ``nifti``.

    Args:
        fmt: the ``kind`` query parameter of the download endpoint.

    Raises:
        LabelMapError: unknown kind, or PNG asked for a 3D label map.
    """
    labels = read_labels(revision)
    stem = f"{revision.target_key.replace(':', '-')}-r{revision.number}"
    spacing = tuple(revision.spacing) if revision.spacing else None
    if fmt == "png":
        if labels.ndim != 2:
            raise labelmaps.LabelMapError("PNG is for 2D label maps; ask for kind=nifti")
        return labelmaps.encode_png(labels), "image/png", f"{stem}.png"
    if fmt == "nifti":
        grid = labelmaps.to_regular_grid(labels, revision.geometry)  # instances placed on the series' grid
        return labelmaps.encode_nifti(grid, revision.geometry, spacing), "application/gzip", f"{stem}.nii.gz"
    raise labelmaps.LabelMapError(
        f"unknown kind {fmt!r}: use kind=png (2D) or kind=nifti; the raw label map is at /api/revisions/<id>/labelmap/")


def purge_series(series: Series) -> dict[str, Any]:
    """Delete every mask revision of a series, with their QC, task actions and drafts.

    The one path that deletes revisions: removing the imaging data itself
    (:func:`imaging.services.delete_series`, through ``imaging.signals.series_deleting``). The
    lineage's ``parent`` links are ``PROTECT``, so revisions go in rounds, those without children
    first, each round through Django's collector (which cascades to the rows that refer to them).

    Returns:
        ``{"files": [...], "removed": {model label: rows}}``: the storage names of the label maps,
        for the caller to delete after commit, and the rows deleted.
    """
    revisions = MaskRevision.objects.filter(series=series)
    files = [name for name in revisions.values_list("labelmap", flat=True) if name]
    removed: dict[str, int] = {}
    while revisions.exists():
        leaves = revisions.filter(children__isnull=True)
        if not leaves.exists():
            raise RevisionImmutableError(f"series {series.pk}: revision lineage has no leaf; cannot delete it")
        _, counts = models.QuerySet.delete(leaves)  # the collector, not RevisionQuerySet.delete (which refuses)
        for label, count in counts.items():
            removed[label] = removed.get(label, 0) + count
    logger.info("series %s: %d mask revision(s) deleted with the series", series.pk, len(files))
    return {"files": files, "removed": removed}


#: ``curated_revisions(modality=...)`` names: the two families and the DICOM codes of each.
MODALITY_FAMILIES: dict[str, tuple[str, ...]] = {
    "cxr": tuple(code for code, _ in XRAY_MODALITIES),
    "ct": (Modality.CT.value,),
}


def curated_q(prefix: str = "") -> Q:
    """The condition "curated" (approved by a reviewer, by adjudication or automatically by the project's
    policy) on revisions, or on a relation to them when ``prefix`` is e.g. ``"revision__"``."""
    return Q(**{f"{prefix}status": RevisionStatus.APPROVED})


def curated_revisions(project: Any, modality: str | None = None) -> QuerySet:
    """The curated label of every target of a project: THE selection exports and retraining use.

    One revision per target: the newest approved one (a target approved, returned by a later review
    and approved again contributes its latest approval only).

    Args:
        project: a :class:`imaging.models.Project` or its id.
        modality: ``"cxr"`` (X-ray: DX and CR), ``"ct"``, a DICOM modality code, or ``None`` for all.

    Raises:
        ValueError: an unknown modality name.
    """
    project_id = getattr(project, "pk", project)
    revisions = MaskRevision.objects.filter(curated_q(), project_id=project_id)
    if modality is not None:
        codes = MODALITY_FAMILIES.get(modality.lower()) or (
            (modality.upper(),) if modality.upper() in Modality.values else None)
        if codes is None:
            raise ValueError(f"unknown modality {modality!r}: use cxr, ct or one of {', '.join(Modality.values)}")
        revisions = revisions.filter(series__modality__in=codes)
    newer = MaskRevision.objects.filter(curated_q(), target_key=OuterRef("target_key"), number__gt=OuterRef("number"))
    return revisions.filter(~Exists(newer)).order_by("target_key")
