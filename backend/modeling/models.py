"""Model registry (ModelVersion, TrainingRun) and proposal jobs.

A :class:`ModelVersion` mirrors one model card of ``ml/weights`` (or a trained run). Exactly one
version per modality is the champion: a partial unique index enforces "at most one", seeding and
:func:`modeling.services.promote` keep "at least one" wherever weights exist.

A :class:`ProposalJob` is one request "run this model version on this target"; the pair
(target, model version) is unique, which makes proposals idempotent.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ModelModality(models.TextChoices):
    """What a model segments; the values are the ``modality`` of the ml model cards."""

    CXR = "cxr", "Chest X-ray"
    CT = "ct", "CT"


class ModelStatus(models.TextChoices):
    CHAMPION = "champion", "Champion"
    CANDIDATE = "candidate", "Candidate"
    RETIRED = "retired", "Retired"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


#: Statuses of a run that holds its project and modality (at most one such run at a time).
ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class TrainingRun(models.Model):
    """A training run that produced weights (filled by the retraining jobs; shipped weights have none).

    Run by :mod:`modeling.training` on an exported dataset manifest; ``dataset_version_id`` is a plain
    id of ``retraining.DatasetVersion`` (retraining sits downstream of modeling).
    """

    name = models.CharField(max_length=100, unique=True)
    modality = models.CharField(max_length=8, choices=ModelModality.choices)
    config = models.JSONField(default=dict, blank=True)
    output_dir = models.CharField(max_length=500, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    project = models.ForeignKey("imaging.Project", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="training_runs")
    dataset_version_id = models.BigIntegerField(null=True, blank=True)
    dataset_sha256 = models.CharField(max_length=64, blank=True)
    manifest = models.CharField(max_length=500, blank=True)
    init_from = models.ForeignKey("ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="fine_tuned_runs", help_text="Empty: trained from scratch")
    seed = models.IntegerField(default=42)
    code_version = models.CharField(max_length=100, blank=True, help_text="git describe of the code that trained")
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.JSONField(default=list, blank=True, help_text="One row per epoch: losses, val Dice, lr")
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    celery_task_id = models.CharField(max_length=50, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "modality"], condition=models.Q(status__in=["queued", "running"]),
                                    name="one_active_run_per_project_modality"),
            models.UniqueConstraint(fields=["project", "modality", "dataset_sha256"],
                                    condition=models.Q(status__in=["queued", "running", "succeeded"]),
                                    name="one_run_per_dataset_version"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """One set of weights with its card, metrics and registry status."""

    name = models.CharField(max_length=100, unique=True, help_text="Model card name (ml registry)")
    modality = models.CharField(max_length=8, choices=ModelModality.choices)
    architecture = models.CharField(max_length=100, blank=True)
    weights_file = models.CharField(max_length=500, help_text="Path of the weights, relative to the repository")
    sha256 = models.CharField(max_length=64)
    card = models.JSONField(default=dict, blank=True, help_text="The full model card")
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=ModelStatus.choices, default=ModelStatus.CANDIDATE)
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions",
        help_text="Empty for shipped weights",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["modality", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["modality"], condition=models.Q(status="champion"), name="one_champion_per_modality"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.modality}, {self.status})"


class JobStatus(models.TextChoices):
    """Life of a job (docs/proposals.md): pending → queued → running → succeeded / failed."""

    PENDING = "pending", "Waiting for the broker"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Waiting to retry"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ProposalJob(models.Model):
    """Run ``model_version`` on one target: an X-ray image (``instance``) or a CT series.

    ``target_key`` is ``"instance:<id>"`` for an X-ray image and ``"series:<id>"`` for a CT series;
    it and ``model_version`` are unique together. ``revision_id`` is the mask revision the
    annotation app stored for the result (a plain id: annotation sits downstream of modeling).
    """

    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="proposal_jobs")
    series = models.ForeignKey("imaging.Series", on_delete=models.CASCADE, related_name="proposal_jobs")
    instance = models.ForeignKey(
        "imaging.Instance", null=True, blank=True, on_delete=models.CASCADE, related_name="proposal_jobs"
    )
    target_key = models.CharField(max_length=40)
    modality = models.CharField(max_length=8, choices=ModelModality.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="proposal_jobs")
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker started this job")
    error = models.TextField(blank=True, help_text="Last error (kept after success for the record)")
    method = models.CharField(max_length=20, blank=True, help_text="'model' or 'classical' (fallback)")
    fallback_reason = models.TextField(blank=True)
    revision_id = models.BigIntegerField(null=True, blank=True)
    queue = models.CharField(max_length=50, blank=True)
    celery_task_id = models.CharField(max_length=50, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="Host/pid of the last worker that ran it")
    duration_s = models.FloatField(null=True, blank=True, help_text="Seconds of the successful attempt")
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per stage of the successful attempt")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="proposal_jobs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Last sign of life: when it was made pending or queued, then every heartbeat of its running worker",
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["target_key", "model_version"], name="one_job_per_target_and_model"),
        ]
        indexes = [
            models.Index(fields=["series", "status"]),
            models.Index(fields=["status", "heartbeat_at"], name="proposaljob_status_heartbeat"),  # the sweep
        ]

    def __str__(self) -> str:
        return f"proposal {self.pk}: {self.model_version_id} on {self.target_key} ({self.status})"
