"""Stored QC of mask revisions: one :class:`QCFlag` per check and a :class:`QCSummary` per revision."""

from __future__ import annotations

from django.db import models


class QCSummary(models.Model):
    """The outcome of automatic QC on one revision; ``priority`` orders the annotators' queue (high first)."""

    revision = models.OneToOneField("annotation.MaskRevision", on_delete=models.CASCADE, related_name="qc")
    modality = models.CharField(max_length=8)
    flagged_count = models.PositiveIntegerField()
    priority = models.FloatField(help_text="Raised flags + (1 - model confidence)")
    confidence = models.FloatField(null=True, blank=True)
    computed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-priority", "revision_id"]
        indexes = [models.Index(fields=["-priority"])]

    def __str__(self) -> str:
        return f"QC of revision {self.revision_id}: {self.flagged_count} flag(s)"


class QCFlag(models.Model):
    """One check on one revision: its value, unit and whether it is out of range."""

    revision = models.ForeignKey("annotation.MaskRevision", on_delete=models.CASCADE, related_name="qc_flags")
    name = models.CharField(max_length=40)
    value = models.FloatField(null=True, blank=True)
    unit = models.CharField(max_length=10, blank=True)
    flagged = models.BooleanField()
    message = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["revision_id", "id"]
        constraints = [models.UniqueConstraint(fields=["revision", "name"], name="one_flag_per_check")]

    def __str__(self) -> str:
        return f"{self.name}={self.value} ({'flagged' if self.flagged else 'ok'})"


class LungIntensity(models.Model):
    """Lung intensity measures of a CT revision (computed once, on first request): mean HU and emphysema index."""

    revision = models.OneToOneField("annotation.MaskRevision", on_delete=models.CASCADE, related_name="lung_intensity")
    mean_hu = models.FloatField(help_text="Mean HU over the lung voxels (both lungs)")
    emphysema_index = models.FloatField(help_text="Percent of lung voxels below the threshold (LAA%)")
    threshold_hu = models.FloatField(default=-950.0)
    voxels = models.PositiveBigIntegerField(help_text="Lung voxels measured")
    computed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"revision {self.revision_id}: {self.mean_hu:.0f} HU, LAA {self.emphysema_index:.1f} %"
