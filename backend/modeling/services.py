"""Model registry and proposal-job services shared by views, tasks and management commands.

Flow of one proposal (see docs/proposals.md):

1. :func:`queue_proposals_for_series` (called from the imaging ingest hook) creates one
   :class:`ProposalJob` per target with the modality's champion and enqueues it after commit.
2. A worker runs :func:`run_job`: :func:`start_job` marks it running (or returns ``None`` when it
   already succeeded: idempotent), :mod:`modeling.inference` computes the label map, and
   :func:`complete_job` sends :data:`modeling.signals.proposal_ready` inside the transaction that
   marks the job succeeded, so the stored revision and the job status commit together.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from imaging.models import Instance, Series, Study

from .inference import ModelRunError, Proposal, ProposalInputError, propose_ct, propose_xray
from .models import JobStatus, ModelModality, ModelStatus, ModelVersion, ProposalJob
from .signals import proposal_ready

logger = logging.getLogger(__name__)

#: DICOM modality → model modality.
DICOM_TO_MODEL: dict[str, str] = {"CR": ModelModality.CXR, "DX": ModelModality.CXR, "CT": ModelModality.CT}


class RegistryError(ValueError):
    """A model card or registry operation is inconsistent (names the card or version)."""


class NoChampionError(LookupError):
    """No champion model is registered for a modality."""


class ModalityMismatchError(ValueError):
    """A model version was asked to run on a target of another modality."""


# --- registry -----------------------------------------------------------------------------------


def _repo_relative(path: str | Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path(settings.REPO_ROOT).resolve()))
    except ValueError:
        return str(path)


def sync_registry(cards: Iterable[dict[str, Any]] | None = None) -> list[ModelVersion]:
    """Create or update a :class:`ModelVersion` for each shipped model card (idempotent).

    Cards are :class:`ml.ModelCard` objects (or plain dicts with the same keys).

    The card the ml registry resolves for the bare modality name (``"cxr"``, ``"ct"``) becomes the
    champion when the modality has none yet; the others are candidates. Existing statuses are kept.

    Args:
        cards: model cards (dicts with ``name``, ``modality``, ``sha256``...); the ml registry's
            when ``None``.

    Returns:
        The versions created or updated.
    """
    from ml import list_cards

    cards = list(list_cards() if cards is None else cards)
    synced: list[ModelVersion] = []
    with transaction.atomic():
        for entry in cards:
            card = entry.to_dict() if hasattr(entry, "to_dict") else dict(entry)
            name, modality = card.get("name"), card.get("modality")
            if not name or modality not in ModelModality.values:
                raise RegistryError(f"model card {name!r}: needs a name and a modality in {ModelModality.values}")
            weights = getattr(entry, "weights_path", None) or card.get("weights_file") or f"ml/weights/{name}.pt"
            defaults = {
                "modality": modality,
                "architecture": str(card.get("architecture", ""))[:100],
                "weights_file": _repo_relative(weights),
                "sha256": str(card.get("sha256", "")),
                "card": {k: v for k, v in card.items() if _json_safe(v)},
                "metrics": card.get("metrics") or {},
            }
            version, created = ModelVersion.objects.update_or_create(name=name, defaults=defaults)
            logger.info("%s model version %s", "registered" if created else "updated", name)
            synced.append(version)
        for modality in {v.modality for v in synced}:
            if not ModelVersion.objects.filter(modality=modality, status=ModelStatus.CHAMPION).exists():
                default = _default_card_name(modality)
                chosen = next((v for v in synced if v.name == default), None)
                chosen = chosen or next(v for v in synced if v.modality == modality)
                promote(chosen)
    return synced


def _json_safe(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, list, dict, type(None)))


def _default_card_name(modality: str) -> str | None:
    from ml import resolve

    try:
        card = resolve(modality)
    except (KeyError, LookupError, ValueError, FileNotFoundError):
        return None
    return card.get("name") if isinstance(card, dict) else getattr(card, "name", None)


def promote(version: ModelVersion) -> ModelVersion:
    """Make ``version`` the champion of its modality; the previous champion becomes a candidate."""
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(modality=version.modality, status=ModelStatus.CHAMPION).exclude(
            pk=version.pk
        ).update(status=ModelStatus.CANDIDATE)
        version.status = ModelStatus.CHAMPION
        version.save(update_fields=["status", "updated_at"])
    logger.info("model %s is now the %s champion", version.name, version.modality)
    return version


def champion(modality: str) -> ModelVersion:
    """The champion model version of a modality.

    Raises:
        NoChampionError: none is registered (no shipped weights for the modality).
    """
    version = ModelVersion.objects.filter(modality=modality, status=ModelStatus.CHAMPION).first()
    if version is None:
        raise NoChampionError(f"no champion model registered for modality {modality!r}")
    return version


# --- jobs ---------------------------------------------------------------------------------------


def model_modality(series: Series) -> str | None:
    """``"cxr"`` or ``"ct"`` for a series, ``None`` when no model applies."""
    return DICOM_TO_MODEL.get(series.modality)


def targets(series: Series) -> list[tuple[Instance | None, str]]:
    """The proposal targets of a series: each X-ray image, or the CT series as a whole."""
    if model_modality(series) == ModelModality.CXR:
        return [(instance, f"instance:{instance.pk}") for instance in series.instances.order_by("id")]
    return [(None, f"series:{series.pk}")]


def task_name(modality: str) -> str:
    """Celery task for a modality (two names so that routes can send CT and X-ray to different queues)."""
    return f"modeling.tasks.propose_{modality}"


def queue_for(modality: str) -> str:
    """The queue the configured routes (``PLEURA_TASK_ROUTES``) send a modality's jobs to."""
    from config.celery import app

    route = app.amqp.router.route({}, task_name(modality), args=(), kwargs={})
    queue = route.get("queue")
    return getattr(queue, "name", None) or str(queue or app.conf.task_default_queue)


def enqueue(job: ProposalJob) -> None:
    """Send the job to its queue once the current transaction commits.

    In the embedded default (eager Celery) the job then runs in-process; its outcome, error
    included, is recorded on the job and never fails the request that queued it.
    """
    from . import tasks

    task = tasks.propose_cxr if job.modality == ModelModality.CXR else tasks.propose_ct

    def send() -> None:
        result = task.apply_async(args=[job.pk])
        ProposalJob.objects.filter(pk=job.pk, celery_task_id="").update(celery_task_id=result.id or "")

    ProposalJob.objects.filter(pk=job.pk).update(queue=queue_for(job.modality))
    transaction.on_commit(send, robust=True)


def queue_proposals_for_series(
    series: Series, version: ModelVersion | None = None, user: Any = None, retry_failed: bool = False
) -> list[ProposalJob]:
    """Create (or find) the proposal jobs of a series for ``version`` (the champion by default).

    Idempotent: an existing job for the same target and version is returned, not duplicated;
    a failed one is queued again when ``retry_failed``.

    Raises:
        ModalityMismatchError: ``version`` is for another modality than the series.
        NoChampionError: no version given and the modality has no champion.
    """
    modality = model_modality(series)
    if modality is None:
        logger.info("series %s: modality %s has no model; no proposal", series.pk, series.modality)
        return []
    version = version or champion(modality)
    if version.modality != modality:
        raise ModalityMismatchError(
            f"model {version.name} segments {version.modality}, series {series.pk} is {modality}")
    jobs: list[ProposalJob] = []
    for instance, key in targets(series):
        with transaction.atomic():
            job, created = ProposalJob.objects.get_or_create(
                target_key=key, model_version=version,
                defaults={"project_id": series.project_id, "series": series, "instance": instance,
                          "modality": modality, "requested_by": user if getattr(user, "pk", None) else None},
            )
            if created or (retry_failed and job.status == JobStatus.FAILED):
                if not created:
                    ProposalJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, finished_at=None)
                enqueue(job)
        jobs.append(job)
    logger.info("series %s: %d proposal job(s) with %s", series.pk, len(jobs), version.name)
    return jobs


def requeue_stale(older_than_s: float) -> list[ProposalJob]:
    """Send again the jobs that have been queued, retrying or running for longer than ``older_than_s``.

    For messages lost by the broker (e.g. Redis restarted without persistence). Safe: a job that
    is in fact still running completes once (the job row decides), the other run finds it done.
    """
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    stale = list(ProposalJob.objects.filter(
        status__in=[JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.RUNNING], created_at__lt=cutoff,
    ).exclude(started_at__gte=cutoff))
    for job in stale:
        enqueue(job)
    logger.info("re-queued %d stale proposal job(s)", len(stale))
    return stale


def queue_proposals_for_study(study: Study, version: ModelVersion, user: Any = None) -> list[ProposalJob]:
    """Proposal jobs with ``version`` for every series of a study that the version applies to."""
    jobs: list[ProposalJob] = []
    for series in study.series.order_by("id"):
        if model_modality(series) == version.modality:
            jobs += queue_proposals_for_series(series, version, user, retry_failed=True)
    return jobs


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def start_job(job_id: int) -> ProposalJob | None:
    """Mark a job running and count the attempt; ``None`` when it already succeeded (idempotency)."""
    with transaction.atomic():
        job = ProposalJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            logger.warning("proposal job %s no longer exists", job_id)
            return None
        if job.status == JobStatus.SUCCEEDED:
            logger.info("proposal job %s already succeeded (revision %s): nothing to do", job_id, job.revision_id)
            return None
        job.status, job.started_at, job.worker = JobStatus.RUNNING, timezone.now(), _worker_name()
        job.attempts += 1
        job.save(update_fields=["status", "started_at", "worker", "attempts"])
    return job


def compute(job: ProposalJob) -> Proposal:
    """Run the job's model on its target (reads the stored image; may take seconds)."""
    version = job.model_version
    if job.modality == ModelModality.CXR:
        if job.instance is None:
            raise ProposalInputError(f"proposal job {job.pk}: an X-ray job needs an instance")
        return propose_xray(job.instance, version.name, version.sha256, version.weights_file)
    return propose_ct(job.series, version.name, version.sha256, version.weights_file)


def complete_job(job_id: int, proposal: Proposal) -> ProposalJob:
    """Hand the proposal to the receivers (annotation stores it) and mark the job succeeded, atomically.

    A second completion of the same job (a redelivered message that ran concurrently) finds the
    job succeeded and stores nothing.
    """
    with transaction.atomic():
        job = ProposalJob.objects.select_for_update().select_related("model_version").get(pk=job_id)
        if job.status == JobStatus.SUCCEEDED:
            logger.info("proposal job %s completed twice; the second result is dropped", job_id)
            return job
        responses = proposal_ready.send(sender=ProposalJob, job=job, proposal=proposal)
        revision_ids = [r["revision_id"] for _, r in responses if isinstance(r, dict) and "revision_id" in r]
        job.revision_id = revision_ids[0] if revision_ids else None
        job.status, job.finished_at = JobStatus.SUCCEEDED, timezone.now()
        job.method, job.fallback_reason = proposal.method, proposal.fallback_reason
        job.duration_s, job.timings = round(proposal.duration_s, 3), proposal.timings
        job.save(update_fields=["revision_id", "status", "finished_at", "method", "fallback_reason", "duration_s",
                                "timings"])
    logger.info("proposal job %s done: %s on %s → revision %s (%.2f s, %s) %s", job.pk, job.model_version.name,
                job.target_key, job.revision_id, proposal.duration_s, proposal.method, proposal.timings)
    return job


def record_error(job_id: int, error: BaseException, final: bool) -> None:
    """Keep the error on the job: ``failed`` when final, ``retrying`` when another attempt follows."""
    status = JobStatus.FAILED if final else JobStatus.RETRYING
    message = f"{type(error).__name__}: {error}"[:4000]
    ProposalJob.objects.filter(pk=job_id).exclude(status=JobStatus.SUCCEEDED).update(
        status=status, error=message, finished_at=timezone.now() if final else None)
    log = logger.error if final else logger.warning
    log("proposal job %s %s: %s", job_id, "failed" if final else "will be retried", message)


#: Errors worth another attempt (database or storage hiccups); everything else fails the job at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ProposalInputError, ModelRunError, IntegrityError)


def run_job(job_id: int) -> ProposalJob | None:
    """Run one proposal job to completion (the body of the Celery tasks).

    Raises whatever the computation raised after recording it on the job, so that the task can
    decide on a retry; ``PERMANENT_ERRORS`` are recorded as final failures.
    """
    job = start_job(job_id)
    if job is None:
        return None
    started = time.perf_counter()
    try:
        proposal = compute(job)
        done = complete_job(job_id, proposal)
    except PERMANENT_ERRORS as exc:
        record_error(job_id, exc, final=True)
        raise
    logger.debug("proposal job %s took %.2f s", job_id, time.perf_counter() - started)
    return done
