"""Models of the review stage (registered in the ``annotation`` app through :mod:`annotation.models`).

- :class:`ReviewPolicy`: per-project settings of the review and double-reading stages.
- :class:`ReviewDecision`: what a reviewer (or the system) decided about a closed task.
- :class:`EditMeasure`: how far a person's revision moved from the model's proposal.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

_FRACTION = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class ReviewPolicy(models.Model):
    """How closed tasks of one project are reviewed (defaults: every task is reviewed, no double reading)."""

    project = models.OneToOneField("imaging.Project", on_delete=models.CASCADE, related_name="review_policy")
    review_fraction = models.FloatField(
        default=1.0, validators=_FRACTION,
        help_text="Fraction of submitted/accepted tasks a reviewer sees; the rest are approved automatically")
    auto_approve_confidence = models.FloatField(
        null=True, blank=True, validators=_FRACTION,
        help_text="Approve proposals accepted unchanged, without QC flag, with model confidence at or above this; "
                  "empty: never")
    double_read_fraction = models.FloatField(
        default=0.0, validators=_FRACTION, help_text="Fraction of tasks read independently by two annotators")
    agreement_threshold = models.FloatField(
        default=0.9, validators=_FRACTION,
        help_text="Double-read pairs whose mean lung Dice is below this go to adjudication")
    updated_at = models.DateTimeField(auto_now=True)

    SETTINGS = ("review_fraction", "auto_approve_confidence", "double_read_fraction", "agreement_threshold")

    def __str__(self) -> str:
        return f"review policy of project {self.project_id}"


class DecisionKind(models.TextChoices):
    APPROVE = "approve", "Approved"
    RETURN = "return", "Returned to the annotator"
    EDIT_APPROVE = "edit_approve", "Edited and approved by the reviewer"
    AUTO_APPROVE = "auto_approve", "Approved automatically (confident proposal accepted unchanged)"
    SAMPLED_OUT = "sampled_out", "Approved without review (not sampled)"
    CONFIRM_REJECT = "confirm_reject", "Rejection confirmed"
    ADJUDICATE = "adjudicate", "Adjudicated (double reading)"


#: Decisions that make a revision curated.
APPROVING_KINDS: frozenset[str] = frozenset({DecisionKind.APPROVE, DecisionKind.EDIT_APPROVE, DecisionKind.AUTO_APPROVE,
                                             DecisionKind.SAMPLED_OUT, DecisionKind.ADJUDICATE})


class ReviewDecision(models.Model):
    """One decision on a closed task: the revision it judged, the revision it produced, who and why."""

    task = models.ForeignKey("annotation.AnnotationTask", on_delete=models.CASCADE, related_name="review_decisions")
    reviewed_revision = models.ForeignKey(
        "annotation.MaskRevision", on_delete=models.CASCADE, related_name="review_decisions",
        help_text="The annotator's revision that was judged")
    result_revision = models.ForeignKey(
        "annotation.MaskRevision", null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="The curated revision (the reviewer's own for edit-and-approve); empty when returned or rejected")
    kind = models.CharField(max_length=16, choices=DecisionKind.choices)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="review_decisions",
        help_text="Empty for the system's decisions (auto-approve, sampling)")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Author of the judged revision (copied for per-annotator figures)")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["task_id", "id"]
        indexes = [models.Index(fields=["kind", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} of task {self.task_id} (revision {self.reviewed_revision_id})"


class EditMeasure(models.Model):
    """A person's revision against the target's latest model proposal (pixels/voxels, Dice, HD95 per lung)."""

    revision = models.OneToOneField("annotation.MaskRevision", on_delete=models.CASCADE, related_name="edit_measure")
    proposal = models.ForeignKey("annotation.MaskRevision", on_delete=models.CASCADE, related_name="+")
    added = models.PositiveIntegerField(help_text="Pixels/voxels that are lung now and were not in the proposal")
    removed = models.PositiveIntegerField(help_text="Pixels/voxels of the proposal's lung that are not lung now")
    relabelled = models.PositiveIntegerField(help_text="Pixels/voxels that changed side (right ↔ left)")
    changed_fraction = models.FloatField(help_text="(added + removed + relabelled) / all pixels/voxels")
    dice_right = models.FloatField()
    dice_left = models.FloatField()
    dice = models.FloatField(help_text="Mean of the right and left lung Dice")
    hd95_right = models.FloatField()
    hd95_left = models.FloatField()
    hd95 = models.FloatField(help_text="Mean of the right and left lung HD95 (unit in hd95_unit)")
    hd95_unit = models.CharField(max_length=4, help_text="'mm', or 'px' when the spacing is unknown")
    computed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"revision {self.revision_id} vs proposal {self.proposal_id}: Dice {self.dice:.3f}"



class DoubleReadStatus(models.TextChoices):
    AWAITING_SECOND = "awaiting_second", "Waiting for the second reader"
    AGREED = "agreed", "Readers agree (at or above the threshold)"
    ADJUDICATION = "adjudication", "Waiting for adjudication"
    ADJUDICATED = "adjudicated", "Adjudicated"


class DoubleRead(models.Model):
    """Two independent readings of one task: the second reader starts from the proposal and never sees the
    first reading; agreement (per lung Dice and HD95) is computed when both are in."""

    task = models.OneToOneField("annotation.AnnotationTask", on_delete=models.CASCADE, related_name="double_read")
    first_revision = models.OneToOneField("annotation.MaskRevision", on_delete=models.CASCADE,
                                          related_name="first_of_double_read")
    second_revision = models.OneToOneField("annotation.MaskRevision", null=True, blank=True, on_delete=models.CASCADE,
                                           related_name="second_of_double_read")
    status = models.CharField(max_length=16, choices=DoubleReadStatus.choices, default=DoubleReadStatus.AWAITING_SECOND)
    dice_right = models.FloatField(null=True, blank=True)
    dice_left = models.FloatField(null=True, blank=True)
    dice = models.FloatField(null=True, blank=True, help_text="Mean of the right and left lung Dice")
    hd95_right = models.FloatField(null=True, blank=True)
    hd95_left = models.FloatField(null=True, blank=True)
    hd95_unit = models.CharField(max_length=4, blank=True)
    threshold = models.FloatField(null=True, blank=True, help_text="The project's agreement threshold when compared")
    created_at = models.DateTimeField(auto_now_add=True)
    compared_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"double reading of task {self.task_id} ({self.status})"
