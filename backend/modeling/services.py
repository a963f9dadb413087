"""Model registry and proposal-job services shared by views, tasks and management commands.

Flow of one proposal (see docs/proposals.md):

1. :func:`queue_proposals_for_series` (called inside the imaging ingest transaction) creates one
   :class:`ProposalJob` per target with the modality's champion, ``pending``: the job row is the
   outbox entry, committed with the upload. After commit :func:`dispatch` publishes it (``queued``);
   when the broker is unreachable it stays ``pending`` and :func:`sweep_jobs` sends it later.
2. A worker runs :func:`run_job`: :func:`start_job` marks it running (or returns ``None`` when it
   already finished or another live worker runs it), a heartbeat thread keeps ``heartbeat_at``
   fresh, :mod:`modeling.inference` computes the label map, and :func:`complete_job` sends
   :data:`modeling.signals.proposal_ready` inside the transaction that marks the job succeeded, so
   the stored revision and the job status commit together (first finished attempt wins).
3. :func:`sweep_jobs` (a django-celery-beat periodic task) requeues running jobs whose worker
   stopped beating (killed), fails jobs past their time limit or lost too often, and sends
   pending ones.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import Case, F, Q, Value, When
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


class ProposalTimeLimitError(ModelRunError):
    """A proposal ran past its soft time limit (``PLEURA_CT_SOFT_TIME_LIMIT_S`` ...): failed, not retried."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the proposal ran over its time limit of {limit_s:g} s")


#: A pending job younger than this may still be being sent by the request that made it.
DISPATCH_GRACE_S: float = 10.0
#: Celery name of the periodic job sweep (scheduled by :mod:`modeling.schedules`).
SWEEP_TASK = "modeling.tasks.sweep_jobs"


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


def refusal_reason(series: Series) -> str:
    """Why proposals for ``series`` are refused without running ("" when they may run)."""
    limit = settings.PLEURA_CT_MAX_SLICES
    if model_modality(series) == ModelModality.CT and series.num_instances > limit:
        return (f"CT series {series.pk} has {series.num_instances} slices, over the limit of {limit} "
                "(PLEURA_CT_MAX_SLICES); the proposal was not run")
    return ""


def time_limits(modality: str) -> tuple[int, int]:
    """``(soft, hard)`` time limit in seconds of one proposal of ``modality``."""
    if modality == ModelModality.CT:
        return settings.PLEURA_CT_SOFT_TIME_LIMIT_S, settings.PLEURA_CT_TIME_LIMIT_S
    return settings.PLEURA_CXR_SOFT_TIME_LIMIT_S, settings.PLEURA_CXR_TIME_LIMIT_S


def enqueue(job: ProposalJob) -> None:
    """Make the job ``pending`` and publish it once the current transaction commits.

    The job row is the outbox: if the broker cannot be reached the job stays ``pending`` and
    :func:`sweep_jobs` publishes it later. In the embedded default (eager Celery) the job runs
    in-process on commit; its outcome, error included, is recorded on the job and never fails the
    request that queued it.
    """
    ProposalJob.objects.filter(pk=job.pk).update(
        queue=queue_for(job.modality), status=JobStatus.PENDING, heartbeat_at=timezone.now(), finished_at=None)
    transaction.on_commit(lambda: dispatch(job.pk, job.modality), robust=True)


def dispatch(job_id: int, modality: str) -> bool:
    """Publish one job to its queue; ``False`` (job left ``pending``) when the broker is unreachable."""
    from config.celery import publish

    from . import tasks

    task = tasks.propose_cxr if modality == ModelModality.CXR else tasks.propose_ct
    task_id = str(uuid.uuid4())
    if not publish(task, [job_id], task_id=task_id):
        logger.warning("proposal job %s stays pending (broker unreachable): the sweep sends it later", job_id)
        return False
    pending = Q(status=JobStatus.PENDING)
    ProposalJob.objects.filter(pk=job_id).update(
        celery_task_id=task_id,
        status=Case(When(pending, then=Value(JobStatus.QUEUED)), default=F("status")),
        heartbeat_at=Case(When(pending, then=Value(timezone.now())), default=F("heartbeat_at")),
    )
    return True


def queue_proposals_for_series(
    series: Series, version: ModelVersion | None = None, user: Any = None, retry_failed: bool = False
) -> list[ProposalJob]:
    """Create (or find) the proposal jobs of a series for ``version`` (the champion by default).

    Idempotent: an existing job for the same target and version is returned, not duplicated;
    a failed one is queued again when ``retry_failed``. A series over a limit
    (:func:`refusal_reason`) gets its jobs failed with the reason, not queued.

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
    refused = refusal_reason(series)
    jobs: list[ProposalJob] = []
    for instance, key in targets(series):
        with transaction.atomic():
            job, created = ProposalJob.objects.get_or_create(
                target_key=key, model_version=version,
                defaults={"project_id": series.project_id, "series": series, "instance": instance,
                          "modality": modality, "requested_by": user if getattr(user, "pk", None) else None},
            )
            if created or (retry_failed and job.status == JobStatus.FAILED):
                if refused:
                    _refuse(job.pk, refused)
                else:
                    enqueue(job)
        jobs.append(job)
    logger.info("series %s: %d proposal job(s) with %s", series.pk, len(jobs), version.name)
    return jobs


def _refuse(job_id: int, reason: str) -> None:
    ProposalJob.objects.filter(pk=job_id).update(status=JobStatus.FAILED, error=reason, finished_at=timezone.now())
    logger.warning("proposal job %s refused: %s", job_id, reason)


def status_counts(series: Series) -> dict[str, int]:
    """How many of the series' proposal jobs are in each status, e.g. ``{"pending": 1}``."""
    counts: dict[str, int] = {}
    for job_status in ProposalJob.objects.filter(series=series).values_list("status", flat=True):
        counts[job_status] = counts.get(job_status, 0) + 1
    return counts


def requeue_stale(older_than_s: float) -> list[ProposalJob]:
    """Send again the jobs that have been queued, retrying or running for longer than ``older_than_s``.

    For messages lost by the broker (e.g. Redis restarted without persistence). Safe: a job that
    is in fact still running completes once (the job row decides), the other run finds it done.
    """
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_s)
    stale = list(ProposalJob.objects.filter(
        status__in=[JobStatus.QUEUED, JobStatus.RETRYING, JobStatus.RUNNING], created_at__lt=cutoff,
    ).exclude(started_at__gte=cutoff))
    for job in stale:
        enqueue(job)
    logger.info("re-queued %d stale proposal job(s)", len(stale))
    return stale


@dataclass
class SweepReport:
    """Job ids each rule of :func:`sweep_jobs` acted on."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    dispatched: list[int] = field(default_factory=list)
    still_pending: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[int]]:
        return {"requeued": self.requeued, "failed": self.failed, "dispatched": self.dispatched,
                "still_pending": self.still_pending}


def sweep_jobs(now: dt.datetime | None = None) -> SweepReport:
    """Recover jobs nobody is working on (the periodic task ``modeling.tasks.sweep_jobs``).

    Under row locks (``SKIP LOCKED``: a job being started or completed is left for the next sweep):

    - a job ``running`` past its hard time limit (+ ``PLEURA_JOB_STALE_S``) fails;
    - a job ``running`` without a heartbeat for ``PLEURA_JOB_STALE_S`` (its worker was killed), or
      ``retrying`` with no retry arriving, is made ``pending`` again, or fails after
      ``PLEURA_JOB_MAX_ATTEMPTS`` attempts;
    - ``pending`` jobs (new ones the broker did not take, and those requeued here) are published,
      stopping at the first broker failure.

    Exactly once: if the original worker was only slow and finishes too, :func:`complete_job` keeps
    the first result under the job's row lock and drops the second.
    """
    now = now or timezone.now()
    report = SweepReport()
    stale = now - dt.timedelta(seconds=settings.PLEURA_JOB_STALE_S)
    shortest_limit = min(time_limits(m)[1] for m in ModelModality.values)
    candidates = (Q(status=JobStatus.RUNNING, heartbeat_at__lt=stale)
                  | Q(status=JobStatus.RUNNING, heartbeat_at__isnull=True, started_at__lt=stale)
                  | Q(status=JobStatus.RUNNING, started_at__lt=stale - dt.timedelta(seconds=shortest_limit))
                  | Q(status=JobStatus.RETRYING, heartbeat_at__lt=stale - dt.timedelta(seconds=_max_retry_wait_s())))
    with transaction.atomic():
        for job in ProposalJob.objects.select_for_update(skip_locked=True).filter(candidates).order_by("id"):
            _sweep_one(job, now, report)
    pending = ProposalJob.objects.filter(
        Q(heartbeat_at__lt=now - dt.timedelta(seconds=DISPATCH_GRACE_S)) | Q(heartbeat_at__isnull=True),
        status=JobStatus.PENDING,
    ).exclude(pk__in=report.requeued).order_by("id")
    for job_id, modality in [*ProposalJob.objects.filter(pk__in=report.requeued).values_list("pk", "modality"),
                             *pending.values_list("pk", "modality")]:
        if report.still_pending or not dispatch(job_id, modality):
            report.still_pending.append(job_id)
        else:
            report.dispatched.append(job_id)
    if any(report.as_dict().values()):
        logger.info("job sweep: %s", report.as_dict())
    return report


def _max_retry_wait_s() -> float:
    from .tasks import BACKOFF_MAX_S

    return BACKOFF_MAX_S


def _sweep_one(job: ProposalJob, now: dt.datetime, report: SweepReport) -> None:
    """Fail a job past its time limit or lost too often; make a job without a live worker pending."""
    stale = now - dt.timedelta(seconds=settings.PLEURA_JOB_STALE_S)
    _, hard = time_limits(job.modality)
    if job.status == JobStatus.RUNNING and job.started_at and job.started_at < stale - dt.timedelta(seconds=hard):
        _fail(job, f"ran over its time limit of {hard} s and was stopped", report)
    elif job.status == JobStatus.RUNNING and job.heartbeat_at and job.heartbeat_at >= stale:
        return  # alive and within its time limit
    elif job.attempts >= settings.PLEURA_JOB_MAX_ATTEMPTS:
        _fail(job, f"its worker was lost {job.attempts} times (killed, or over the memory or time limit)", report)
    else:
        logger.warning("proposal job %s (%s): no heartbeat from %s since %s; requeued", job.pk, job.status,
                       job.worker, job.heartbeat_at)
        ProposalJob.objects.filter(pk=job.pk).update(status=JobStatus.PENDING, heartbeat_at=now)
        report.requeued.append(job.pk)


def _fail(job: ProposalJob, reason: str, report: SweepReport) -> None:
    message = f"JobLost: {reason}"
    ProposalJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error=message, finished_at=timezone.now())
    logger.error("proposal job %s failed: %s", job.pk, message)
    report.failed.append(job.pk)


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
    """Mark a job running and count the attempt; ``None`` when there is nothing to run.

    Nothing to run: the job is gone, already finished (``succeeded``/``failed``: a redelivered
    message), running on another worker that is still beating, or refused (:func:`refusal_reason`,
    then recorded as failed).
    """
    with transaction.atomic():
        job = ProposalJob.objects.select_for_update().select_related("series").filter(pk=job_id).first()
        if job is None:
            logger.warning("proposal job %s no longer exists", job_id)
            return None
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            logger.info("proposal job %s already %s (revision %s): nothing to do", job_id, job.status, job.revision_id)
            return None
        fresh = timezone.now() - dt.timedelta(seconds=settings.PLEURA_JOB_STALE_S)
        if job.status == JobStatus.RUNNING and job.heartbeat_at and job.heartbeat_at >= fresh:
            logger.info("proposal job %s is running on %s (heartbeat %s): this delivery is dropped", job_id,
                        job.worker, job.heartbeat_at)
            return None
        refused = refusal_reason(job.series)
        if refused:
            _refuse(job_id, refused)
            return None
        now = timezone.now()
        job.status, job.started_at, job.heartbeat_at, job.worker = JobStatus.RUNNING, now, now, _worker_name()
        job.attempts += 1
        job.save(update_fields=["status", "started_at", "heartbeat_at", "worker", "attempts"])
    return job


@contextmanager
def heartbeat(job_id: int, attempt: int, interval_s: float) -> Iterator[None]:
    """Refresh ``heartbeat_at`` every ``interval_s`` seconds from a thread while the block runs.

    The update is conditional on the attempt still being the job's current one, so a worker whose
    job was requeued by the sweep cannot keep the new attempt looking alive.
    """
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval_s):
                alive = ProposalJob.objects.filter(pk=job_id, status=JobStatus.RUNNING, attempts=attempt).update(
                    heartbeat_at=timezone.now())
                if not alive:
                    logger.warning("proposal job %s attempt %s was requeued or finished elsewhere", job_id, attempt)
                    return
        except DatabaseError as exc:
            logger.warning("heartbeat of proposal job %s stopped: %s", job_id, exc)
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=beat, name=f"heartbeat-job-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def compute(job: ProposalJob) -> Proposal:
    """Run the job's model on its target (reads the stored image; may take seconds)."""
    version = job.model_version
    if job.modality == ModelModality.CXR:
        if job.instance is None:
            raise ProposalInputError(f"proposal job {job.pk}: an X-ray job needs an instance")
        return propose_xray(job.instance, version.name, version.sha256, version.weights_file)
    return propose_ct(job.series, version.name, version.sha256, version.weights_file)


def complete_job(job_id: int, proposal: Proposal) -> ProposalJob | None:
    """Hand the proposal to the receivers (annotation stores it) and mark the job succeeded, atomically.

    A second completion of the same job (a redelivered message, or the original attempt of a job
    the sweep requeued, finishing after all) finds the job succeeded and stores nothing. The
    series row is locked first, as :func:`imaging.services.delete_series` does: a proposal is
    either stored before a deletion (and deleted with it) or finds its job gone (``None``).
    """
    series_id = ProposalJob.objects.filter(pk=job_id).values_list("series_id", flat=True).first()
    with transaction.atomic():
        locked = series_id is not None and Series.objects.select_for_update().filter(pk=series_id).exists()
        job = locked and ProposalJob.objects.select_for_update().select_related("model_version").filter(
            pk=job_id).first()
        if not job:
            logger.warning("proposal job %s was deleted with its series while it ran; result dropped", job_id)
            return None
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
        status=status, error=message, finished_at=timezone.now() if final else None, heartbeat_at=timezone.now())
    log = logger.error if final else logger.warning
    log("proposal job %s %s: %s", job_id, "failed" if final else "will be retried", message)


#: Errors worth another attempt (database or storage hiccups); everything else fails the job at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ProposalInputError, ModelRunError, IntegrityError)


def run_job(job_id: int, heartbeat_s: float | None = None, time_limit_s: float | None = None
            ) -> ProposalJob | None:
    """Run one proposal job to completion (the body of the Celery tasks).

    Args:
        job_id: the job.
        heartbeat_s: refresh ``heartbeat_at`` this often while computing (``None``: no heartbeat,
            as in the embedded in-process mode, where no sweep runs).
        time_limit_s: a result computed in more seconds than this is not stored: the job fails
            with :class:`ProposalTimeLimitError`. (Celery's soft limit interrupts the work earlier
            in the prefork pool, but library code may swallow its exception; this check cannot be.)

    Raises whatever the computation raised after recording it on the job, so that the task can
    decide on a retry; ``PERMANENT_ERRORS`` are recorded as final failures.
    """
    job = start_job(job_id)
    if job is None:
        return None
    started = time.perf_counter()
    try:
        if heartbeat_s:
            with heartbeat(job_id, job.attempts, heartbeat_s):
                proposal = compute(job)
        else:
            proposal = compute(job)
        if time_limit_s is not None and time.perf_counter() - started > time_limit_s:
            raise ProposalTimeLimitError(time_limit_s)
        done = complete_job(job_id, proposal)
    except PERMANENT_ERRORS as exc:
        record_error(job_id, exc, final=True)
        raise
    logger.debug("proposal job %s took %.2f s", job_id, time.perf_counter() - started)
    return done
