"""Imaging domain services shared by the API, management commands and Celery tasks."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pydicom
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_rescale

from accounts.audit import record, snapshot
from config.logsafe import file_ref

from .deid import deidentify, original_patient_key, pseudonym_for
from .errors import (
    InconsistentSeriesError,
    IngestError,
    InvalidFileError,
    MalformedDicomError,
    MixedPatientsError,
    NoFilesError,
)
from .limits import DecodeBudget
from .models import BurnedInAnnotation, Instance, Patient, Project, Series, SourceFormat, Study, Upload
from .readers import ImageOptions, image_to_dataset, nifti_to_datasets, read_dicom, sha256_hex
from .signals import series_deleting, series_ingested, series_stored
from .sources import Limits, SourceFile, expand, kind_of

logger = logging.getLogger(__name__)

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UNEXPECTED_FILE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, NotImplementedError)
ProgressCallback = Callable[[int], None]


@dataclass
class PreparedInstance:
    """A validated, de-identified dataset ready to store."""

    source_name: str
    dataset: Dataset
    pseudonym: str
    source_format: str
    burned_in: str
    study_date: str = ""


@dataclass
class IngestResult:
    """Outcome of one ingest: the Upload record and what it created."""

    upload: Upload
    series: list[Series] = field(default_factory=list)
    created_series: int = 0
    num_instances: int = 0
    num_duplicates: int = 0
    warnings: list[str] = field(default_factory=list)
    #: What downstream apps reported after commit, summed over the series, e.g. ``{"proposals": {"pending": 1}}``.
    followups: dict[str, dict[str, int]] = field(default_factory=dict)


def ingest(
    project: Project,
    sources: Iterable[SourceFile],
    *,
    user: Any = None,
    origin: str = "api",
    patient_key: str | None = None,
    modality: str = "DX",
    limits: Limits | None = None,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Validate, de-identify and store an upload; atomically (all or nothing).

    Args:
        project: Target project (its ``deidentify`` flag and secret apply).
        sources: Uploaded files: DICOM, .zip of DICOM, PNG/JPEG, NIfTI.
        user: Uploading user, recorded on the Upload.
        origin: ``api`` or ``command``.
        patient_key: Optional patient key for PNG/JPEG/NIfTI files (hashed to a pseudonym);
            without it each such file is its own patient.
        modality: Modality recorded for PNG/JPEG X-rays (``DX`` or ``CR``).
        limits: Size limits; default from settings.
        progress: Called with the number of files processed since the last call.

    Raises:
        IngestError: A subclass naming the offending file and the reason. Nothing is stored then.
    """
    limits = limits or Limits.from_settings()
    budget = DecodeBudget.from_settings()  # one per upload: what it may inflate and decode
    files = expand(sources, limits, budget)
    if not files:
        raise NoFilesError("(upload)", "no files were received")
    prepared = _prepare_all(project, files, patient_key=patient_key, modality=modality, budget=budget, progress=progress)
    result = _store(project, prepared, user=user, origin=origin, num_files=len(files))
    logger.info(
        "ingested upload %s into project %s: %d instances in %d series, %d duplicates skipped",
        result.upload.pk, project.pk, result.num_instances, len(result.series), result.num_duplicates,
    )
    return result


def _prepare_all(
    project: Project, files: Sequence[SourceFile], *, patient_key: str | None, modality: str, budget: DecodeBudget,
    progress: ProgressCallback | None,
) -> list[PreparedInstance]:
    options = ImageOptions(secret=project.deid_secret, patient_key=patient_key, modality=modality, budget=budget)
    prepared: list[PreparedInstance] = []
    first_patient: tuple[str, str] | None = None  # (original key, file name); memory only
    for source in files:
        try:
            first_patient = _prepare_one(project, source, options, first_patient, prepared)
        except IngestError:
            raise
        except _UNEXPECTED_FILE_ERRORS as exc:
            # Library errors can quote file contents: report the type only, never the message.
            logger.warning("could not process %s (%s)", file_ref(source.name), type(exc).__name__)
            raise InvalidFileError(source.name, f"the file could not be processed ({type(exc).__name__})") from None
        if progress is not None:
            progress(1)
    return prepared


def _prepare_one(
    project: Project, source: SourceFile, options: ImageOptions, first_patient: tuple[str, str] | None,
    prepared: list[PreparedInstance],
) -> tuple[str, str] | None:
    """Validate, convert and de-identify one file; append to ``prepared``; return the first patient."""
    kind = kind_of(source)
    if kind == "dicom":
        ds = read_dicom(source.name, source.data, options.budget)
        key = original_patient_key(ds)
        if first_patient is None:
            first_patient = (key, source.name)
        elif key != first_patient[0]:
            raise MixedPatientsError(
                source.name, f"this file belongs to a different patient than {first_patient[1]}; "
                "upload one patient at a time"
            )
        prepared.append(_prepare_dicom(project, source.name, ds))
    elif kind == "image":
        ds = image_to_dataset(source.name, source.data, options)
        prepared.append(PreparedInstance(source.name, ds, str(ds.PatientID), SourceFormat.IMAGE, BurnedInAnnotation.UNKNOWN))
    else:
        for ds in nifti_to_datasets(source.name, source.data, options):
            prepared.append(PreparedInstance(source.name, ds, str(ds.PatientID), SourceFormat.NIFTI, BurnedInAnnotation.NO))
    return first_patient


def _prepare_dicom(project: Project, name: str, ds: Dataset) -> PreparedInstance:
    if project.deidentify:
        result = deidentify(ds, project.deid_secret)
        pseudonym, burned_in = result.pseudonym, result.burned_in_annotation
    else:
        pseudonym = pseudonym_for(project.deid_secret, original_patient_key(ds))
        flag = str(ds.get("BurnedInAnnotation", "") or "").upper()
        burned_in = flag if flag in ("YES", "NO") else BurnedInAnnotation.UNKNOWN
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not UID_PATTERN.match(str(ds.get(keyword, "") or "")) or len(str(ds.get(keyword))) > 64:
            raise MalformedDicomError(name, f"{keyword} is missing or malformed")
    return PreparedInstance(name, ds, pseudonym, SourceFormat.DICOM, burned_in, str(ds.get("StudyDate", "") or ""))


def dataset_bytes(ds: Dataset) -> bytes:
    """Serialise a dataset as a DICOM Part-10 file with a fresh file meta header.

    The pixel encoding is kept as received (uncompressed, RLE or JPEG), but implicit VR little
    endian is written as explicit VR little endian: the same values, with each element's VR in
    the file, so that readers need no data dictionary to parse it (the viewer's parser logs an
    error for every slice whose pixel data has no stated VR). A file with an element whose VR
    cannot be told from the dataset (e.g. a top-level LUT descriptor, ``US or SS``) is kept in
    implicit VR, as received.
    """
    received = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or pydicom.uid.ExplicitVRLittleEndian
    if received == pydicom.uid.ImplicitVRLittleEndian:
        try:
            return _part10_bytes(ds, pydicom.uid.ExplicitVRLittleEndian)
        except ValueError as error:  # pydicom: "Cannot write ambiguous VR of ..."
            logger.info("%s kept in implicit VR: %s", ds.get("SOPInstanceUID", "an instance"), str(error).splitlines()[0])
    return _part10_bytes(ds, received)


def _part10_bytes(ds: Dataset, transfer_syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _float_list(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _slice_location(ds: Dataset) -> float | None:
    orientation, position = _float_list(ds.get("ImageOrientationPatient")), _float_list(ds.get("ImagePositionPatient"))
    if not orientation or not position or len(orientation) != 6 or len(position) != 3:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.dot(normal, position))


def _parse_da(value: str) -> Any:
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date() if value else None
    except ValueError:
        return None


def _store(project: Project, prepared: list[PreparedInstance], *, user: Any, origin: str, num_files: int) -> IngestResult:
    """Store rows and files in one transaction; files are deleted again only if it rolls back.

    ``series_stored`` receivers write their follow-up rows (proposal jobs) in the same
    transaction; the after-commit hooks are robust: a broker that cannot be reached after commit
    never undoes a committed upload (the jobs stay pending and are sent later by the sweep).
    """
    groups: OrderedDict[str, list[PreparedInstance]] = OrderedDict()
    for item in prepared:
        groups.setdefault(str(item.dataset.SeriesInstanceUID), []).append(item)
    saved: list[str] = []
    try:
        with transaction.atomic():
            upload = Upload.objects.create(
                project=project, created_by=user if user is not None and user.is_authenticated else None,
                source=origin, num_files=num_files,
            )
            result = IngestResult(upload=upload)
            for series_uid, items in groups.items():
                series, created, added, duplicates = _store_series(project, series_uid, items, saved)
                result.num_instances += added
                result.num_duplicates += duplicates
                result.created_series += int(created)
                if added:
                    result.series.append(series)
                    series_stored.send(sender=Series, series=series, created=created, upload=upload)
                    transaction.on_commit(partial(_after_commit, series, created, upload, result), robust=True)
                if added and series.burned_in_annotation != BurnedInAnnotation.NO:
                    result.warnings.append(
                        f"series {series.series_instance_uid}: burned-in annotation "
                        f"{series.burned_in_annotation.lower()}; check the pixels for identifying text"
                    )
            upload.num_instances = result.num_instances
            upload.num_duplicates = result.num_duplicates
            upload.warnings = result.warnings
            upload.save(update_fields=["num_instances", "num_duplicates", "warnings"])
            upload.series.set(result.series)
    except BaseException:
        _delete_files(saved)
        raise
    return result


def _delete_files(names: Iterable[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("could not delete stored file %s during clean-up", name)


def _store_series(
    project: Project, series_uid: str, items: list[PreparedInstance], saved: list[str]
) -> tuple[Series, bool, int, int]:
    first = items[0]
    ds = first.dataset
    patient, _ = Patient.objects.get_or_create(project=project, pseudonym=first.pseudonym)
    study, _ = Study.objects.get_or_create(
        project=project, study_instance_uid=str(ds.StudyInstanceUID),
        defaults={"patient": patient, "study_date": _parse_da(first.study_date)},
    )
    if study.patient_id != patient.pk:
        raise MixedPatientsError(first.source_name, "the study already exists in this project under another patient")
    series, created = Series.objects.get_or_create(
        project=project, series_instance_uid=series_uid, defaults=_series_fields(study, first)
    )
    if series.study_id != study.pk:
        raise MixedPatientsError(first.source_name, "the series already exists in this project under another study")
    existing = set(
        Instance.objects.filter(project=project, sop_instance_uid__in=[str(i.dataset.SOPInstanceUID) for i in items])
        .values_list("sop_instance_uid", flat=True)
    )
    added = duplicates = 0
    for item in items:
        if (int(item.dataset.Rows), int(item.dataset.Columns)) != (series.rows, series.columns):
            raise InconsistentSeriesError(
                item.source_name, f"image size {item.dataset.Rows}x{item.dataset.Columns} differs from its series "
                f"({series.rows}x{series.columns})"
            )
        sop_uid = str(item.dataset.SOPInstanceUID)
        if sop_uid in existing:
            duplicates += 1
            continue
        existing.add(sop_uid)
        if _store_instance(project, series, study, item, saved):
            added += 1
        else:
            duplicates += 1
    if added:
        update_series_geometry(series)
    return series, created, added, duplicates


def _series_fields(study: Study, item: PreparedInstance) -> dict[str, Any]:
    ds = item.dataset
    spacing = _float_list(ds.get("PixelSpacing")) or _float_list(ds.get("ImagerPixelSpacing"))
    thickness = ds.get("SliceThickness")
    return {
        "study": study,
        "modality": str(ds.Modality),
        "source_format": item.source_format,
        "series_number": int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "pixel_spacing_row": spacing[0] if spacing else None,
        "pixel_spacing_column": spacing[1] if spacing and len(spacing) > 1 else None,
        "slice_thickness": float(thickness) if thickness not in (None, "") else None,
        "orientation": _float_list(ds.get("ImageOrientationPatient")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "") or ""),
        "burned_in_annotation": item.burned_in,
    }


def storage_name(project: Project, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Where an instance is stored: derived from UIDs only, never from user paths."""
    return f"projects/{project.pk}/{study_uid}/{series_uid}/{sop_uid}.dcm"


def _store_instance(project: Project, series: Series, study: Study, item: PreparedInstance, saved: list[str]) -> bool:
    """Store one instance; ``False`` when a concurrent upload stored the same SOP Instance UID first."""
    ds = item.dataset
    content = dataset_bytes(ds)
    name = default_storage.save(
        storage_name(project, study.study_instance_uid, series.series_instance_uid, str(ds.SOPInstanceUID)),
        ContentFile(content),
    )
    saved.append(name)
    number = ds.get("InstanceNumber")
    try:
        with transaction.atomic():  # savepoint: a unique-UID clash must not abort the whole upload
            Instance.objects.create(
                project=project, series=series, sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID), instance_number=int(number) if number not in (None, "") else None,
                image_position=_float_list(ds.get("ImagePositionPatient")), slice_location=_slice_location(ds),
                file=name, file_size=len(content), sha256=sha256_hex(content),
            )
    except IntegrityError:
        logger.info("instance %s was stored by a concurrent upload; skipped", ds.SOPInstanceUID)
        saved.remove(name)
        _delete_files([name])
        return False
    return True


def update_series_geometry(series: Series) -> None:
    """Recount instances and derive the slice spacing (median gap between slice positions, mm)."""
    locations = sorted(
        loc for loc in series.instances.values_list("slice_location", flat=True) if loc is not None
    )
    series.num_instances = series.instances.count()
    if len(locations) >= 2:
        gaps = np.diff(locations)
        gaps = gaps[gaps > 1e-6]
        series.slice_spacing = float(np.median(gaps)) if gaps.size else None
    series.save(update_fields=["num_instances", "slice_spacing"])


def _after_commit(series: Series, created: bool, upload: Upload, result: IngestResult) -> None:
    """Tell other apps (see ``imaging.signals``) and collect what they report, then queue the statistics.

    The proposal jobs the annotators wait for were sent by their own commit hooks just before;
    the statistics nobody waits for go after them on the same queue. A broker that cannot be
    reached is logged, never raised: the upload is committed whole.
    """
    from config.celery import publish

    from .tasks import compute_series_statistics_task

    for receiver, response in series_ingested.send_robust(sender=Series, series=series, created=created, upload=upload):
        if isinstance(response, Exception):
            logger.error("series_ingested receiver %r failed for series %s: %r", receiver, series.pk, response)
        elif isinstance(response, dict):
            _add_counts(result.followups, response)
    if not publish(compute_series_statistics_task, [series.pk]):
        logger.warning("statistics of series %s not queued (broker unreachable)", series.pk)


def _add_counts(total: dict[str, dict[str, int]], report: dict[str, Any]) -> None:
    """Sum ``{"key": {"name": count}}`` reports into ``total``."""
    for key, counts in report.items():
        if isinstance(counts, dict):
            bucket = total.setdefault(key, {})
            for name, count in counts.items():
                bucket[name] = bucket.get(name, 0) + int(count)


def compute_series_statistics(series_id: int, max_samples: int = 2_000_000) -> dict[str, Any] | None:
    """Intensity statistics of a stored series (HU for CT, stored pixel values otherwise).

    Reads every instance through the storage API, applies RescaleSlope/Intercept and stores
    ``min, max, mean, std, p01, p50, p99, voxels, slices, extent_mm`` in ``series.stats``.
    Returns the statistics, or ``None`` when the series no longer exists.
    """
    series = Series.objects.filter(pk=series_id).first()
    if series is None:
        logger.warning("series %s vanished before its statistics were computed", series_id)
        return None
    samples: list[np.ndarray] = []
    voxels = 0
    instances = list(series.instances.all())
    for instance in instances:
        with default_storage.open(instance.file.name, "rb") as handle:
            ds = pydicom.dcmread(handle)
        values = np.asarray(apply_rescale(ds.pixel_array, ds), dtype=np.float64)
        voxels += values.size
        step = max(1, values.size * len(instances) // max_samples)
        samples.append(values.ravel()[::step])
    data = np.concatenate(samples) if samples else np.zeros(0)
    locations = [i.slice_location for i in instances if i.slice_location is not None]
    stats: dict[str, Any] = {
        "unit": "HU" if series.modality == "CT" else "pixel value",
        "slices": len(instances),
        "voxels": voxels,
        "extent_mm": (max(locations) - min(locations)) if len(locations) >= 2 else None,
    }
    if data.size:
        p01, p50, p99 = np.percentile(data, [1, 50, 99])
        stats.update(min=float(data.min()), max=float(data.max()), mean=float(data.mean()), std=float(data.std()),
                     p01=float(p01), p50=float(p50), p99=float(p99))
    series.stats = stats
    series.stats_computed_at = timezone.now()
    series.save(update_fields=["stats", "stats_computed_at"])
    logger.info("statistics computed for series %s (%d slices)", series.pk, len(instances))
    return stats


@dataclass
class DeletionReport:
    """What :func:`delete_series` or :func:`delete_upload` removed (``removed``: rows per model label)."""

    series_ids: list[int] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def delete_series(series: Series, *, actor: Any = None, reason: str = "", report: DeletionReport | None = None
                  ) -> DeletionReport:
    """Remove a series completely, atomically, with an audit record.

    Rows: the series, its instances, and (through ``series_deleting`` receivers and cascades) the
    mask revisions, QC, annotation tasks, drafts and proposal jobs of other apps; its study and
    patient when nothing else is left under them. Files: the instances' and the receivers' files,
    deleted only after the transaction commits (a rollback leaves every file in place).

    Args:
        series: the series to remove.
        actor: the user deleting it (recorded in the audit log).
        reason: why (recorded in the audit log; e.g. "PHI in pixel data").
        report: add to this report (several series in one transaction) instead of a new one.

    Raises:
        Series.DoesNotExist: the series was deleted meanwhile.
    """
    report = report if report is not None else DeletionReport()
    with transaction.atomic():
        # The series row lock orders this deletion with a proposal being stored for it (modeling locks it too).
        series = Series.objects.select_for_update().select_related("study__patient").get(pk=series.pk)
        study, patient = series.study, series.study.patient
        before = {**snapshot(series), "study_instance_uid": study.study_instance_uid, "patient": patient.pseudonym}
        files = [name for name in series.instances.values_list("file", flat=True) if name]
        removed: dict[str, int] = {}
        for _receiver, response in series_deleting.send(sender=Series, series=series):
            files += [name for name in (response or {}).get("files", []) if name]
            removed = _merge(removed, (response or {}).get("removed", {}))
        removed = _merge(removed, _delete_counted(series))
        if not study.series.exists():
            removed = _merge(removed, _delete_counted(study))
            if not patient.studies.exists():
                removed = _merge(removed, _delete_counted(patient))
        record(actor, "series.delete", target_type="imaging.series", target_id=before["id"],
               target_repr=f"{series.modality} series {series.series_instance_uid}", project_id=series.project_id,
               before={**before, "removed": removed, "files": len(files)}, reason=reason)
        transaction.on_commit(partial(_delete_files, files))
    report.series_ids.append(before["id"])
    report.removed = _merge(report.removed, removed)
    report.files += files
    logger.info("series %s deleted: %s, %d file(s)", before["id"], removed, len(files))
    return report


def delete_upload(upload: Upload, *, actor: Any = None, reason: str = "") -> DeletionReport:
    """Remove an upload completely: every series it added to (as :func:`delete_series`) and its record."""
    report = DeletionReport()
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload.pk)
        before = {**snapshot(upload, [f.name for f in Upload._meta.concrete_fields]),
                  "series": list(upload.series.values_list("pk", flat=True))}
        for series in upload.series.order_by("pk"):
            delete_series(series, actor=actor, reason=reason, report=report)
        upload.delete()
        report.removed = _merge(report.removed, {Upload._meta.label: 1})
        record(actor, "upload.delete", target_type="imaging.upload", target_id=before["id"],
               target_repr=f"upload {before['id']}", project_id=upload.project_id,
               before={**before, "removed": report.removed, "files": len(report.files)}, reason=reason)
    return report


def _delete_counted(obj: Any) -> dict[str, int]:
    """``obj.delete()`` (cascading); the rows removed per model label."""
    _, per_model = obj.delete()
    return {label: count for label, count in per_model.items() if count}


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in sorted({*a, *b})}


@dataclass(frozen=True)
class DemoSetup:
    """What ``ensure_demo`` created or found."""

    username: str
    password_hint: str
    project_name: str
    project_id: int
    token: str


def ensure_demo(*, username: str = "admin", password: str = "pleura-admin", reset_password: bool = False,
                project_name: str = "demo") -> DemoSetup:
    """Idempotently create a superuser, the demo project and the admin's membership and token.

    The password is set when the user is created, or again when ``reset_password`` is true.
    """
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from accounts.models import Membership, Role

    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or reset_password:
            user.set_password(password)
            user.save()
        project, _ = Project.objects.get_or_create(
            name=project_name, defaults={"description": "Demo project created by setup_demo"}
        )
        Membership.objects.get_or_create(user=user, project=project, defaults={"role": Role.ADMIN})
        token, _ = Token.objects.get_or_create(user=user)
    hint = password if (created or reset_password) else "(unchanged; set PLEURA_ADMIN_PASSWORD to reset)"
    return DemoSetup(username, hint, project.name, project.pk, token.key)
