"""Quality dashboard: every figure of a project built with known outcomes, the filters, CSV, permissions."""

from __future__ import annotations

import csv
import io

import pytest
from django.utils import timezone

from accounts.models import Role
from dashboard_helpers import build
from quality import dashboard

pytestmark = pytest.mark.django_db


def _dice(k: int) -> float:
    """Mean of right (unchanged: 1) and left lung Dice after adding k pixels to a 200-pixel left lung."""
    return (1.0 + 400.0 / (400.0 + k)) / 2.0


@pytest.fixture
def known(project):
    return build(project)


def _figures(project, **params) -> dict[str, dashboard.Figure]:
    flt = dashboard.DashboardFilter.parse(project.pk, params)
    return {f.name: f for f in dashboard.figures(flt)}


def _table(figure: dashboard.Figure) -> dict[str, list]:
    return {row[0]: row[1:] for row in figure.rows}


def test_every_figure_of_a_project_with_known_outcomes(project, known):
    figures = _figures(project)
    today = timezone.localdate()
    yesterday = today - timezone.timedelta(days=1)

    assert _table(figures["summary"]) == {
        "Open": [1], "In progress": [0], "In review": [1], "Returned for changes": [0], "Done": [3], "Rejected": [1],
        "closed in range": [6], "curated in range": [3]}
    backlog = _table(figures["backlog"])
    assert backlog[yesterday.isoformat()] == [1, 1, 0] and backlog[today.isoformat()] == [5, 4, 1]
    throughput = _table(figures["throughput"])
    assert throughput[yesterday.isoformat()] == [0, 0, 1] and throughput[today.isoformat()] == [2, 3, 0]
    assert _table(figures["outcomes"]) == {
        "accepted unchanged": [2], "edited": [3], "rejected: Unreadable image": [1], "rejected: Not a chest image": [0],
        "rejected: Wrong modality": [0], "rejected: Other": [0]}
    assert _table(figures["time_per_task"]) == {
        "< 30 s": [2], "30-60 s": [1], "1-2 min": [1], "2-5 min": [0], "5-10 min": [1], "10-30 min": [1], ">= 30 min": [0]}

    people = _table(figures["annotators"])
    # closed, accepted, edited, rejected, time mean, time total, changed fraction mean, approved, returned,
    # edited by reviewer, approval rate
    assert people["ann1"] == [3, 1, 2, 0, round(155 / 3, 1), 155.0, round((0 + 10 + 15) / 3 / 1600, 6), 2, 1, 0,
                              round(2 / 3, 4)]
    assert people["ann2"] == [3, 1, 1, 1, 370.0, 1110.0, round((0 + 20 + 0) / 3 / 1600, 6), 0, 0, 1, 0.0]

    effort = _table(figures["edit_effort"])
    measures = dashboard.measures(dashboard.DashboardFilter(project.pk))
    hd95_a = [m.hd95 for m in measures if m.proposal.model_version_id == known.model_a.pk]
    assert effort["cxr-a"][:3] == [5, round(45 / 5 / 1600, 6), round((1 + _dice(10) + _dice(15) + 1 + _dice(20)) / 5, 4)]
    assert effort["cxr-a"][3] == round(sum(hd95_a) / 5, 2) and effort["cxr-a"][4] == 0
    assert effort["cxr-b"] == [1, 0.0, 1.0, 0.0, 0]
    dice = figures["dice_distribution"]
    assert dice.columns == ["dice", "cxr-a", "cxr-b"]
    assert _table(dice) == {"< 0.80": [0, 0], "0.80-0.90": [0, 0], "0.90-0.95": [0, 0], "0.95-0.98": [1, 0],
                            "0.98-0.99": [2, 0], "0.99-1.00": [0, 0], "1.00 (unchanged)": [2, 1]}
    assert sum(sum(row[1:]) for row in figures["hd95_distribution"].rows) == 6

    flags = _table(figures["qc_flags"])
    # confidence flagged on t2, t3, t5; all three closed; t2 edited and t3 rejected confirm it, t5 accepted does not
    assert flags["confidence"] == [6, 3, 0.5, 3, 2, round(2 / 3, 4)]
    assert all(row[1] == 0 for name, row in flags.items() if name != "confidence")
    assert _table(figures["review_outcomes"]) == {
        "ann1": [2, 1, 0, 0, 0, 0], "ann2": [0, 0, 1, 0, 0, 1]}
    assert figures["review_outcomes"].columns == [
        "annotator", "approve", "return", "edit_approve", "auto_approve", "sampled_out", "confirm_reject"]


def test_filters_restrict_every_figure(project, known):
    today = timezone.localdate().isoformat()
    mine = _figures(project, annotator=str(known.ann1.pk))
    assert _table(mine["outcomes"])["accepted unchanged"] == [1] and _table(mine["outcomes"])["edited"] == [2]
    assert list(_table(mine["annotators"])) == ["ann1"]
    since_today = _figures(project, **{"from": today})
    assert _table(since_today["outcomes"])["rejected: Unreadable image"] == [0]
    assert [r[0] for r in since_today["throughput"].rows] == [today]
    model_b = _figures(project, model_version=str(known.model_b.pk))
    assert list(_table(model_b["edit_effort"])) == ["cxr-b"] and _table(model_b["qc_flags"])["confidence"][:2] == [2, 1]
    ct = _figures(project, modality="ct")
    assert _table(ct["summary"])["closed in range"] == [0] and ct["edit_effort"].rows == []
    with pytest.raises(dashboard.DashboardFilterError, match="YYYY-MM-DD"):
        dashboard.DashboardFilter.parse(project.pk, {"from": "yesterday"})
    with pytest.raises(dashboard.DashboardFilterError, match="modality"):
        dashboard.DashboardFilter.parse(project.pk, {"modality": "mri"})


def test_dashboard_api_csv_and_permissions(project, other_project, known, make_member, client_for):
    reviewer = client_for(known.reviewer)
    body = reviewer.get(f"/api/quality/dashboard/{project.pk}/").json()
    assert [f["name"] for f in body["figures"]] == list(dashboard.FIGURES)
    assert [name for _, name in body["options"]["model_versions"]] == ["cxr-a", "cxr-b"]
    outcomes = next(f for f in body["figures"] if f["name"] == "outcomes")
    got = reviewer.get(f"/api/quality/dashboard/{project.pk}/outcomes.csv")
    assert got["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(got.content.decode())))
    assert rows[0] == outcomes["columns"] and rows[1:] == [[str(v) for v in r] for r in outcomes["rows"]]
    assert reviewer.get(f"/api/quality/dashboard/{project.pk}/nothing.csv").status_code == 400
    assert reviewer.get(f"/api/quality/dashboard/{project.pk}/", {"to": "2020-13-01"}).status_code == 400
    assert client_for(known.ann1).get(f"/api/quality/dashboard/{project.pk}/").status_code == 403
    stranger = client_for(make_member(other_project, Role.ADMIN, "stranger"))
    assert stranger.get(f"/api/quality/dashboard/{project.pk}/").status_code == 404
    assert stranger.get(f"/api/quality/dashboard/{project.pk}/outcomes.csv").status_code == 404
    assert client_for(None).get(f"/api/quality/dashboard/{project.pk}/").status_code in (401, 403)


def test_the_cached_dashboard_follows_every_new_action_and_decision(project, known, client_for):
    from annotation import workflow
    from annotation.review import services as review

    reviewer = client_for(known.reviewer)

    def outcomes() -> dict[str, list]:
        body = reviewer.get(f"/api/quality/dashboard/{project.pk}/", {"figure": ["outcomes", "review_outcomes"]}).json()
        return {f["name"]: {r[0]: r[1:] for r in f["rows"]} for f in body["figures"]}

    assert outcomes()["outcomes"]["accepted unchanged"] == [2]
    assert outcomes()["outcomes"]["accepted unchanged"] == [2]  # served again (cached), unchanged
    t6 = known.tasks[5]
    latest = workflow.latest_revision(t6)
    accepted = workflow.accept(t6.pk, known.ann1, latest.pk, 3).revision
    assert outcomes()["outcomes"]["accepted unchanged"] == [3]
    review.approve(t6.pk, known.reviewer, accepted.pk)
    assert outcomes()["review_outcomes"]["ann1"][0] == 3
