"""Forms of the administration pages (validation of what a project lead types)."""

from __future__ import annotations

from django import forms

from accounts.models import Role

from .models import ProjectModality




class ProjectSettingsForm(forms.Form):
    name = forms.SlugField(max_length=100, help_text="Letters, digits, - and _ (used in URLs and exports)")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    modality = forms.ChoiceField(choices=ProjectModality.choices)
    deidentify = forms.BooleanField(required=False, label="De-identify uploads",
                                    help_text="Switching it needs the confirmation box below")
    confirm_deidentify = forms.BooleanField(required=False, label="I confirm the change of de-identification")
    review_fraction = forms.FloatField(min_value=0.0, max_value=1.0,
                                       help_text="Share of submitted/accepted tasks a reviewer sees (1 = all)")
    auto_approve_confidence = forms.FloatField(
        required=False, min_value=0.0, max_value=1.0,
        help_text="Approve unchanged, unflagged proposals at or above this model confidence (empty: never)")
    double_read_fraction = forms.FloatField(min_value=0.0, max_value=1.0,
                                            help_text="Share of tasks read by two annotators independently")
    agreement_threshold = forms.FloatField(min_value=0.0, max_value=1.0,
                                           help_text="Double-read pairs below this mean Dice go to adjudication")

    SETTINGS = ("name", "description", "modality", "deidentify", "review_fraction", "auto_approve_confidence",
                "double_read_fraction", "agreement_threshold")


class NewProjectForm(ProjectSettingsForm):
    deidentify = forms.BooleanField(required=False, initial=True, label="De-identify uploads")
    confirm_deidentify = None  # type: ignore[assignment]


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)


class AssignForm(forms.Form):
    tasks = forms.CharField(help_text="Task ids, comma or space separated, e.g. 12, 13, 20-25")
    assignee = forms.CharField(required=False, help_text="Username; empty to unassign")
    priority = forms.IntegerField(initial=0, min_value=-1000, max_value=1000, help_text="Higher comes first")

    def clean_tasks(self) -> list[int]:
        ids: list[int] = []
        for part in self.cleaned_data["tasks"].replace(",", " ").split():
            low, _, high = part.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise forms.ValidationError(f"{part!r} is not a task id or a range like 20-25")
            first, last = int(low), int(high or low)
            if last < first or last - first > 10_000:
                raise forms.ValidationError(f"{part!r} is not a sensible range")
            ids.extend(range(first, last + 1))
        if not ids:
            raise forms.ValidationError("Give at least one task id.")
        return ids
