"""Dataset versions (immutable snapshots of curated labels) and the frozen patient-level split.

A :class:`DatasetVersion` is identified by the sha256 of its content (which revision of which
target, the label map's checksum, the split): the same curated labels give the same version, so a
snapshot taken twice is one version and nothing downstream runs twice for it. Its rows
(:class:`DatasetItem`) are written once, in the transaction that creates the version.

:class:`SplitAssignment` freezes each patient's split per project and modality: once a patient is
in ``test`` they stay there in every later version.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class ImmutableError(Exception):
    """An attempt to change a stored dataset version or one of its items."""


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VAL = "val", "Validation"
    TEST = "test", "Test (frozen)"


class SplitAssignment(models.Model):
    """The split of one patient in a project and modality; never changed once written."""

    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="split_assignments")
    modality = models.CharField(max_length=8)
    patient = models.ForeignKey("imaging.Patient", on_delete=models.CASCADE, related_name="split_assignments")
    split = models.CharField(max_length=5, choices=Split.choices)
    rule = models.CharField(max_length=100, help_text="The seeded rule that assigned it")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "modality", "patient"], name="one_split_per_patient")]

    def __str__(self) -> str:
        return f"patient {self.patient_id} → {self.split} ({self.modality})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableError(f"split assignment {self.pk} is frozen")
        super().save(*args, **kwargs)


class DatasetVersion(models.Model):
    """A content-hashed snapshot of the curated revisions of a project and modality."""

    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="dataset_versions")
    modality = models.CharField(max_length=8, help_text="'cxr' or 'ct' (model modality)")
    sha256 = models.CharField(max_length=64, help_text="sha256 of the sorted item lines (see datasets.content_hash)")
    number = models.PositiveIntegerField(help_text="1, 2, ... per project and modality")
    counts = models.JSONField(default=dict, help_text="Targets per split, e.g. {'train': 10, 'val': 2, 'test': 3}")
    folder = models.CharField(max_length=500, blank=True, help_text="Exported manifest + files (absolute path)")
    manifest = models.CharField(max_length=500, blank=True, help_text="Manifest CSV in the format ml reads")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "modality", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "modality", "sha256"], name="one_version_per_content"),
            models.UniqueConstraint(fields=["project", "modality", "number"], name="unique_dataset_number"),
        ]

    def __str__(self) -> str:
        return f"dataset v{self.number} of project {self.project_id} ({self.modality}, {self.sha256[:12]})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding and set(kwargs.get("update_fields") or ["*"]) - {"folder", "manifest"}:
            raise ImmutableError(f"dataset version {self.pk} is immutable (only its export paths are set once)")
        super().save(*args, **kwargs)


class DatasetItem(models.Model):
    """One target of a dataset version: the curated revision used, its patient and split."""

    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="items")
    revision = models.ForeignKey("annotation.MaskRevision", on_delete=models.PROTECT, related_name="dataset_items")
    target_key = models.CharField(max_length=40)
    patient = models.ForeignKey("imaging.Patient", on_delete=models.PROTECT, related_name="dataset_items")
    split = models.CharField(max_length=5, choices=Split.choices)
    label_sha256 = models.CharField(max_length=64)
    case = models.CharField(max_length=80, help_text="Case name in the manifest")

    class Meta:
        ordering = ["dataset_version_id", "target_key"]
        constraints = [models.UniqueConstraint(fields=["dataset_version", "target_key"], name="one_item_per_target")]

    def __str__(self) -> str:
        return f"{self.target_key} r{self.revision_id} ({self.split})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableError(f"dataset item {self.pk} is immutable")
        super().save(*args, **kwargs)


class ChampionChange(models.Model):
    """One swap of a modality's champion (gate, manual promotion or roll-back); the audit log holds the same."""

    class Kind(models.TextChoices):
        GATE = "gate", "Promoted by the gate"
        MANUAL = "manual", "Promoted by hand"
        ROLLBACK = "rollback", "Rolled back"

    modality = models.CharField(max_length=8)
    previous = models.ForeignKey("modeling.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+")
    champion = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="champion_changes")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.modality}: {self.previous_id} → {self.champion_id} ({self.kind})"


class EvalSet(models.TextChoices):
    PROJECT_TEST = "project_test", "Project's frozen test split"
    REFERENCE = "reference", "Fixed reference set"


class Evaluation(models.Model):
    """Scores of one model version on one test set of one dataset version; history, never overwritten.

    ``dataset_version`` is empty for the reference set (the same fixed files for every version).
    """

    model_version = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="evaluations")
    dataset_version = models.ForeignKey(DatasetVersion, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="evaluations")
    test_set = models.CharField(max_length=20, choices=EvalSet.choices)
    source = models.CharField(max_length=500, help_text="Manifest and split that were scored")
    summary = models.JSONField(help_text="ml evaluate summary.json: mean / median / p05 Dice with 95 % CI, HD95, ...")
    case_dice = models.JSONField(help_text="{case: Dice}, what the gate pairs")
    n_cases = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["model_version", "dataset_version", "test_set"],
                                    name="one_evaluation_per_model_dataset_set"),
            models.UniqueConstraint(fields=["model_version", "test_set"], condition=models.Q(dataset_version=None),
                                    name="one_reference_evaluation_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} on {self.test_set} of {self.dataset_version_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableError(f"evaluation {self.pk} is history and cannot be overwritten")
        super().save(*args, **kwargs)


class PromotionDecision(models.Model):
    """The gate's verdict on one candidate against the champion on one dataset version (kept for the record)."""

    candidate = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="gate_decisions")
    champion = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="+")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="gate_decisions")
    promoted = models.BooleanField()
    reason = models.TextField()
    stats = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.candidate_id} vs {self.champion_id}: {'promoted' if self.promoted else 'kept as candidate'}"


class RetrainingPolicy(models.Model):
    """When a project's modality is retrained: a nightly check (a django-celery-beat task) and after N new curated labels."""

    project = models.ForeignKey("imaging.Project", on_delete=models.CASCADE, related_name="retraining_policies")
    modality = models.CharField(max_length=8)
    enabled = models.BooleanField(default=True)
    min_new_labels = models.PositiveIntegerField(default=50, help_text="Curated labels since the last run that trigger a check")
    nightly_task = models.OneToOneField("django_celery_beat.PeriodicTask", null=True, blank=True,
                                        on_delete=models.SET_NULL, related_name="+")
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "modality"], name="one_policy_per_project_modality")]

    def __str__(self) -> str:
        return f"retraining of project {self.project_id} ({self.modality})"
