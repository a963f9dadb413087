"""Quality dashboard figures of a project, each computed by aggregate queries (no loop over revisions).

Every figure is a table (``columns``, ``rows``) with a chart hint; the page draws the chart and shows
the table, and the API serves each table as CSV. Filters: date range (inclusive, on the date of the
action / decision / revision a figure counts), modality family (``cxr``/``ct``), annotator and model version.

Definitions (also shown on the page):

- *closed*: a task action (accept unchanged, submit edits, reject) by an annotator;
- *edit effort*: :class:`annotation.review.models.EditMeasure` of the revisions those actions stored,
  i.e. the final mask against the model proposal it started from;
- *backlog* at the end of a day: tasks created up to that day that had no closing action yet.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Avg, Case, CharField, Count, Exists, F, Max, OuterRef, Q, QuerySet, Sum, Value, When
from django.core.cache import cache
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import Membership
from annotation.models import (
    AnnotationTask,
    DecisionKind,
    DoubleRead,
    EditMeasure,
    MaskRevision,
    RejectReason,
    ReviewDecision,
    RevisionSource,
    TaskAction,
    TaskActionKind,
    TaskStatus,
)
from annotation.services import MODALITY_FAMILIES, curated_q

from .models import QCFlag

logger = logging.getLogger(__name__)

#: Seconds a computed dashboard is kept; any new action, decision, revision or task change invalidates it sooner.
CACHE_SECONDS = 300
#: Longest date range a daily figure spans (days).
MAX_DAYS = 366
TIME_BINS: tuple[tuple[str, float, float | None], ...] = (
    ("< 30 s", 0, 30), ("30-60 s", 30, 60), ("1-2 min", 60, 120), ("2-5 min", 120, 300), ("5-10 min", 300, 600),
    ("10-30 min", 600, 1800), (">= 30 min", 1800, None))
DICE_BINS: tuple[tuple[str, float, float | None], ...] = (
    ("< 0.80", -1, 0.80), ("0.80-0.90", 0.80, 0.90), ("0.90-0.95", 0.90, 0.95), ("0.95-0.98", 0.95, 0.98),
    ("0.98-0.99", 0.98, 0.99), ("0.99-1.00", 0.99, 1.0), ("1.00 (unchanged)", 1.0, None))
HD95_BINS: tuple[tuple[str, float, float | None], ...] = (
    ("0 mm", -1, 1e-9), ("0-1 mm", 1e-9, 1.0), ("1-2 mm", 1.0, 2.0), ("2-5 mm", 2.0, 5.0), ("5-10 mm", 5.0, 10.0),
    ("10-20 mm", 10.0, 20.0), (">= 20 mm", 20.0, None))


class DashboardFilterError(ValueError):
    """A filter value the dashboard cannot use."""


@dataclass(frozen=True)
class DashboardFilter:
    """What the figures are restricted to; ``None`` means no restriction."""

    project_id: int
    start: dt.date | None = None
    end: dt.date | None = None
    modality: str | None = None
    annotator_id: int | None = None
    model_version_id: int | None = None

    @classmethod
    def parse(cls, project_id: int, params: Any) -> DashboardFilter:
        """From query parameters ``from``, ``to`` (YYYY-MM-DD), ``modality``, ``annotator``, ``model_version``.

        Raises:
            DashboardFilterError: a value is malformed.
        """
        def date(name: str) -> dt.date | None:
            value = (params.get(name) or "").strip()
            if not value:
                return None
            try:
                return dt.date.fromisoformat(value)
            except ValueError as exc:
                raise DashboardFilterError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from exc

        def number(name: str) -> int | None:
            value = (params.get(name) or "").strip()
            if not value:
                return None
            if not value.isdigit():
                raise DashboardFilterError(f"{name} must be an id, got {value!r}")
            return int(value)

        modality = (params.get("modality") or "").strip().lower() or None
        if modality is not None and modality not in MODALITY_FAMILIES:
            raise DashboardFilterError(f"modality must be one of {', '.join(MODALITY_FAMILIES)}, got {modality!r}")
        start, end = date("from"), date("to")
        if start and end and end < start:
            raise DashboardFilterError("the end date is before the start date")
        return cls(project_id, start, end, modality, number("annotator"), number("model_version"))

    def _bounds(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        tz = timezone.get_current_timezone()
        low = dt.datetime.combine(self.start, dt.time.min, tz) if self.start else None
        high = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min, tz) if self.end else None
        return low, high

    def q(self, *, when: str, series: str, annotator: str | None = None, model: str | None = None) -> Q:
        """The filter as a ``Q`` over a queryset whose date, series, annotator and model paths are given."""
        condition = Q()
        low, high = self._bounds()
        if low is not None:
            condition &= Q(**{f"{when}__gte": low})
        if high is not None:
            condition &= Q(**{f"{when}__lt": high})
        if self.modality:
            condition &= Q(**{f"{series}__modality__in": MODALITY_FAMILIES[self.modality]})
        if self.annotator_id is not None and annotator:
            condition &= Q(**{annotator: self.annotator_id})
        if self.model_version_id is not None and model:
            condition &= Q(**{model: self.model_version_id})
        return condition


@dataclass
class Figure:
    """One table of the dashboard and how to chart it (``chart``: type, x column, series columns)."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    chart: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "columns": self.columns, "rows": self.rows,
                "chart": self.chart, "note": self.note}


# ------------------------------------------------------------------------------ base querysets


def actions(f: DashboardFilter) -> QuerySet:
    """Annotators' closing actions of the project under the filter."""
    return TaskAction.objects.filter(task__project_id=f.project_id).filter(f.q(
        when="created_at", series="task__series", annotator="author_id",
        model="revision__edit_measure__proposal__model_version_id"))


def decisions(f: DashboardFilter) -> QuerySet:
    """Review decisions of the project under the filter (annotator = author of the judged revision)."""
    return ReviewDecision.objects.filter(task__project_id=f.project_id).filter(f.q(
        when="created_at", series="task__series", annotator="annotator_id",
        model="reviewed_revision__edit_measure__proposal__model_version_id"))


def measures(f: DashboardFilter) -> QuerySet:
    """Edit measures of the revisions annotators' actions stored."""
    return EditMeasure.objects.filter(revision__project_id=f.project_id, revision__task_action__isnull=False).filter(
        f.q(when="revision__created_at", series="revision__series", annotator="revision__author_id",
            model="proposal__model_version_id"))


def _bins(field_name: str, bins: tuple[tuple[str, float, float | None], ...]) -> Case:
    whens = []
    for label, low, high in bins:
        condition = Q(**{f"{field_name}__gte": low}) if high is None else Q(**{f"{field_name}__gte": low,
                                                                             f"{field_name}__lt": high})
        whens.append(When(condition, then=Value(label)))
    return Case(*whens, output_field=CharField())


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# ------------------------------------------------------------------------------ figures


def _days(f: DashboardFilter, first: dt.date | None) -> list[dt.date]:
    end = f.end or timezone.localdate()
    start = f.start or first or end
    start = max(start, end - dt.timedelta(days=MAX_DAYS - 1))
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def backlog(f: DashboardFilter) -> Figure:
    """Tasks created, closed (first closing action) and left open at the end of each day."""
    tasks = AnnotationTask.objects.filter(project_id=f.project_id)
    if f.modality:
        tasks = tasks.filter(series__modality__in=MODALITY_FAMILIES[f.modality])
    created = dict(tasks.annotate(day=TruncDate("created_at")).values("day").annotate(n=Count("id"))
                   .values_list("day", "n"))
    # each task's first closing action: an action with no earlier one of the same task (an anti-join)
    earlier = TaskAction.objects.filter(task_id=OuterRef("task_id"), created_at__lt=OuterRef("created_at"))
    firsts = TaskAction.objects.filter(task__in=tasks).exclude(Exists(earlier))
    closed = dict(firsts.annotate(day=TruncDate("created_at")).values("day").annotate(n=Count("task_id", distinct=True))
                  .values_list("day", "n"))
    days = _days(f, min(created) if created else None)
    before = days[0] if days else None
    open_before = (sum(n for d, n in created.items() if before and d < before)
                   - sum(n for d, n in closed.items() if before and d < before))
    rows, running = [], open_before
    for day in days:
        running += created.get(day, 0) - closed.get(day, 0)
        rows.append([day.isoformat(), created.get(day, 0), closed.get(day, 0), running])
    return Figure("backlog", "Backlog per day", ["day", "created", "closed", "backlog"], rows,
                  {"type": "line", "x": "day", "series": ["backlog", "created", "closed"]},
                  "backlog: tasks created up to the day without a closing action yet (modality filter only)")


def throughput(f: DashboardFilter) -> Figure:
    """Closing actions per day by kind."""
    counts = actions(f).annotate(day=TruncDate("created_at")).values("day").annotate(
        accepted=Count("id", filter=Q(kind=TaskActionKind.ACCEPT)),
        edited=Count("id", filter=Q(kind=TaskActionKind.SUBMIT)),
        rejected=Count("id", filter=Q(kind=TaskActionKind.REJECT))).order_by("day")
    by_day = {r["day"]: r for r in counts}
    days = _days(f, min(by_day) if by_day else None)
    rows = [[d.isoformat(), *(by_day.get(d, {}).get(k, 0) for k in ("accepted", "edited", "rejected"))] for d in days]
    return Figure("throughput", "Tasks closed per day", ["day", "accepted", "edited", "rejected"], rows,
                  {"type": "bar", "x": "day", "series": ["accepted", "edited", "rejected"], "stack": True})


def annotators(f: DashboardFilter) -> Figure:
    """Per annotator: tasks closed by kind, time per task, edit effort and review outcomes."""
    per_action = {r["author__username"]: r for r in actions(f).values("author__username").annotate(
        closed=Count("id"), accepted=Count("id", filter=Q(kind=TaskActionKind.ACCEPT)),
        edited=Count("id", filter=Q(kind=TaskActionKind.SUBMIT)),
        rejected=Count("id", filter=Q(kind=TaskActionKind.REJECT)),
        time_mean=Avg("time_spent_s"), time_total=Sum("time_spent_s"),
        changed=Avg("revision__edit_measure__changed_fraction"))}
    per_review = {r["annotator__username"]: r for r in decisions(f).filter(annotator__isnull=False)
                  .values("annotator__username").annotate(
                      approved=Count("id", filter=Q(kind__in=[DecisionKind.APPROVE, DecisionKind.AUTO_APPROVE,
                                                              DecisionKind.SAMPLED_OUT])),
                      returned=Count("id", filter=Q(kind=DecisionKind.RETURN)),
                      reviewer_edited=Count("id", filter=Q(kind=DecisionKind.EDIT_APPROVE)))}
    rows = []
    for name in sorted(set(per_action) | set(per_review)):
        a, r = per_action.get(name, {}), per_review.get(name, {})
        judged = r.get("approved", 0) + r.get("returned", 0) + r.get("reviewer_edited", 0)
        rows.append([name, a.get("closed", 0), a.get("accepted", 0), a.get("edited", 0), a.get("rejected", 0),
                     _round(a.get("time_mean"), 1), _round(a.get("time_total"), 1), _round(a.get("changed"), 6),
                     r.get("approved", 0), r.get("returned", 0), r.get("reviewer_edited", 0),
                     _round(r.get("approved", 0) / judged, 4) if judged else None])
    return Figure("annotators", "Per annotator",
                  ["annotator", "closed", "accepted", "edited", "rejected", "time_mean_s", "time_total_s",
                   "changed_fraction_mean", "approved", "returned", "edited_by_reviewer", "approval_rate"], rows,
                  {"type": "bar", "x": "annotator", "series": ["accepted", "edited", "rejected"], "stack": True})


def time_per_task(f: DashboardFilter) -> Figure:
    """How long annotators worked before closing a task (histogram)."""
    counts = dict(actions(f).annotate(bin=_bins("time_spent_s", TIME_BINS)).values("bin").annotate(n=Count("id"))
                  .values_list("bin", "n"))
    rows = [[label, counts.get(label, 0)] for label, _, _ in TIME_BINS]
    return Figure("time_per_task", "Time per task", ["time", "tasks"], rows, {"type": "bar", "x": "time", "series": ["tasks"]})


def outcomes(f: DashboardFilter) -> Figure:
    """Accepted unchanged, edited, and rejected per reason."""
    counts = {(r["kind"], r["reason"]): r["n"] for r in actions(f).values("kind", "reason").annotate(n=Count("id"))}
    rows = [["accepted unchanged", counts.get((TaskActionKind.ACCEPT, ""), 0)],
            ["edited", counts.get((TaskActionKind.SUBMIT, ""), 0)]]
    rows += [[f"rejected: {label}", counts.get((TaskActionKind.REJECT, code), 0)] for code, label in RejectReason.choices]
    return Figure("outcomes", "Outcomes", ["outcome", "tasks"], rows, {"type": "bar", "x": "outcome", "series": ["tasks"]})


def _model_name() -> Coalesce:
    return Coalesce(F("proposal__model_version__name"), F("proposal__method"), Value("unknown"), output_field=CharField())


def edit_effort(f: DashboardFilter) -> Figure:
    """Per model version: how much annotators changed its proposals (fraction changed, Dice, HD95)."""
    rows = [[r["model"], r["n"], _round(r["changed"], 6), _round(r["dice"], 4), _round(r["hd95_mm"], 2), r["n_px"]]
            for r in measures(f).annotate(model=_model_name()).values("model").annotate(
                n=Count("id"), changed=Avg("changed_fraction"), dice=Avg("dice"),
                hd95_mm=Avg("hd95", filter=Q(hd95_unit="mm")), n_px=Count("id", filter=~Q(hd95_unit="mm")))
            .order_by("model")]
    return Figure("edit_effort", "Edit effort per model version",
                  ["model", "masks", "changed_fraction_mean", "dice_mean", "hd95_mean_mm", "masks_without_spacing"],
                  rows, {"type": "bar", "x": "model", "series": ["dice_mean"]},
                  "final mask against the model's proposal; Dice and HD95 are means of the right and left lung")


def _distribution(f: DashboardFilter, name: str, title: str, field_name: str,
                  bins: tuple[tuple[str, float, float | None], ...], extra: Q | None = None) -> Figure:
    queryset = measures(f).filter(extra or Q())
    counts = {(r["bin"], r["model"]): r["n"] for r in queryset.annotate(
        bin=_bins(field_name, bins), model=_model_name()).values("bin", "model").annotate(n=Count("id"))}
    models = sorted({m for _, m in counts})
    rows = [[label, *(counts.get((label, m), 0) for m in models)] for label, _, _ in bins]
    return Figure(name, title, [field_name, *models], rows, {"type": "bar", "x": field_name, "series": models})


def dice_distribution(f: DashboardFilter) -> Figure:
    return _distribution(f, "dice_distribution", "Proposal vs final Dice per model version", "dice", DICE_BINS)


def hd95_distribution(f: DashboardFilter) -> Figure:
    figure = _distribution(f, "hd95_distribution", "Proposal vs final HD95 per model version (mm)", "hd95", HD95_BINS,
                           Q(hd95_unit="mm"))
    figure.note = "masks with known pixel/voxel spacing only"
    return figure


def qc_flags(f: DashboardFilter) -> Figure:
    """Per QC check on model proposals: how often it was raised, and how often an edit confirmed it.

    Two grouped queries: flag counts over the proposals' flags, and (joined from the annotators'
    edit measures to the flags of the proposal they started from) the flagged proposals that were
    closed and those whose closing changed the mask or rejected the image.
    """
    flags = QCFlag.objects.filter(revision__project_id=f.project_id, revision__source=RevisionSource.MODEL).filter(
        f.q(when="revision__created_at", series="revision__series", model="revision__model_version_id"))
    counts = {r["name"]: r for r in flags.values("name").annotate(  # names differ from the fields they count
        n_proposals=Count("id"), n_flagged=Count("id", filter=Q(flagged=True)))}
    edited = Q(changed_fraction__gt=0) | Q(revision__task_action__kind=TaskActionKind.REJECT)
    closing = EditMeasure.objects.filter(
        proposal__project_id=f.project_id, revision__task_action__isnull=False, proposal__qc_flags__flagged=True).filter(
        f.q(when="proposal__created_at", series="proposal__series", model="proposal__model_version_id"))
    confirmed = {r["proposal__qc_flags__name"]: r for r in closing.values("proposal__qc_flags__name").annotate(
        n_closed=Count("proposal_id", distinct=True), n_confirmed=Count("proposal_id", distinct=True, filter=edited))}
    rows = []
    for name in sorted(counts):
        total, raised = counts[name]["n_proposals"], counts[name]["n_flagged"]
        closed = confirmed.get(name, {}).get("n_closed", 0)
        done = confirmed.get(name, {}).get("n_confirmed", 0)
        rows.append([name, total, raised, _round(raised / total) if total else None, closed, done,
                     _round(done / closed) if closed else None])
    return Figure("qc_flags", "QC flags on proposals",
                  ["flag", "proposals", "flagged", "flag_rate", "flagged_closed", "confirmed_by_edit", "confirmation_rate"],
                  rows, {"type": "bar", "x": "flag", "series": ["flag_rate", "confirmation_rate"]},
                  "confirmed: the annotator changed the flagged proposal (or rejected the image)")


def review_outcomes(f: DashboardFilter) -> Figure:
    """Review decisions per annotator of the judged revision."""
    kinds = [k for k, _ in DecisionKind.choices if k != DecisionKind.ADJUDICATE]
    rows = [[r["annotator__username"] or "(none)", *(r[k] for k in kinds)]
            for r in decisions(f).values("annotator__username").annotate(
                **{k: Count("id", filter=Q(kind=k)) for k in kinds}).order_by("annotator__username")]
    return Figure("review_outcomes", "Review outcomes per annotator", ["annotator", *kinds], rows,
                  {"type": "bar", "x": "annotator", "series": [DecisionKind.APPROVE, DecisionKind.RETURN,
                                                                DecisionKind.EDIT_APPROVE], "stack": True})


def agreement(f: DashboardFilter) -> Figure:
    """Inter-reader agreement of double-read pairs (mean lung Dice of the two readings), binned."""
    pairs = DoubleRead.objects.filter(task__project_id=f.project_id, dice__isnull=False).filter(
        f.q(when="compared_at", series="task__series", model="first_revision__edit_measure__proposal__model_version_id"))
    if f.annotator_id is not None:
        pairs = pairs.filter(Q(first_revision__author_id=f.annotator_id) | Q(second_revision__author_id=f.annotator_id))
    counts = {r["bin"]: r for r in pairs.annotate(bin=_bins("dice", DICE_BINS)).values("bin").annotate(
        n=Count("id"), below=Count("id", filter=Q(dice__lt=F("threshold"))))}
    rows = [[label, counts.get(label, {}).get("n", 0), counts.get(label, {}).get("below", 0)] for label, _, _ in DICE_BINS]
    return Figure("agreement", "Inter-reader agreement (double reading)", ["dice", "pairs", "sent_to_adjudication"], rows,
                  {"type": "bar", "x": "dice", "series": ["pairs", "sent_to_adjudication"]},
                  "mean of the right and left lung Dice between the two independent readings")


def summary(f: DashboardFilter) -> Figure:
    """Headline numbers: tasks per status now, closed and curated in the range."""
    tasks = AnnotationTask.objects.filter(project_id=f.project_id)
    if f.modality:
        tasks = tasks.filter(series__modality__in=MODALITY_FAMILIES[f.modality])
    by_status = dict(tasks.values("status").annotate(n=Count("id")).values_list("status", "n"))
    curated = MaskRevision.objects.filter(curated_q(), project_id=f.project_id).filter(
        f.q(when="created_at", series="series", annotator="author_id", model="edit_measure__proposal__model_version_id"))
    rows = [[label, by_status.get(code, 0)] for code, label in TaskStatus.choices]
    rows += [["closed in range", actions(f).count()], ["curated in range", curated.count()]]
    return Figure("summary", "Summary", ["measure", "count"], rows, {"type": "bar", "x": "measure", "series": ["count"]})


FIGURES = {fn.__name__: fn for fn in (summary, backlog, throughput, annotators, time_per_task, outcomes, edit_effort,
                                      dice_distribution, hd95_distribution, qc_flags, review_outcomes, agreement)}


def figures(f: DashboardFilter, names: list[str] | None = None) -> list[Figure]:
    """The dashboard's figures (all, or those named).

    Raises:
        DashboardFilterError: an unknown figure name.
    """
    unknown = [n for n in names or [] if n not in FIGURES]
    if unknown:
        raise DashboardFilterError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    return [FIGURES[n](f) for n in (names or list(FIGURES))]


def data_version() -> str:
    """A key that changes whenever anything a figure counts changes (newest ids and task update time).

    Site-wide maxima read from primary-key indexes (and one scan of the tasks' ``updated_at``): cheap,
    and never stale, at the price of recomputing a project's dashboard when another project changed.
    """
    parts = [TaskAction.objects.aggregate(v=Max("id"))["v"], ReviewDecision.objects.aggregate(v=Max("id"))["v"],
             MaskRevision.objects.aggregate(v=Max("id"))["v"], DoubleRead.objects.aggregate(v=Max("compared_at"))["v"],
             AnnotationTask.objects.aggregate(v=Max("updated_at"))["v"], timezone.localdate(),
             *Membership.objects.aggregate(v=Max("id"), n=Count("id")).values()]  # the filter's annotator list
    return "|".join(str(p) for p in parts)


def cached(key: str, compute: Any) -> Any:
    """``compute()``, from the cache while the data is unchanged (:func:`data_version` is part of the key)."""
    raw = f"{key}:{data_version()}"
    full = f"pleura:dashboard:{hashlib.sha256(raw.encode()).hexdigest()}"  # safe for every cache backend
    hit = cache.get(full)
    if hit is not None:
        return hit
    value = compute()
    cache.set(full, value, CACHE_SECONDS)
    return value


def cached_figures(f: DashboardFilter, names: list[str] | None = None) -> list[dict[str, Any]]:
    """:func:`figures` as dicts, from the cache while the data is unchanged."""
    return cached(f"figures:{f!r}:{sorted(names or [])}", lambda: [figure.as_dict() for figure in figures(f, names)])
