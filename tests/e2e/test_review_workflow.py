"""Review stage end to end in Chromium: submit → return with a comment → the annotator sees it, fixes and
resubmits → the reviewer approves (the revision is curated), and the quality dashboard's counts and charts
change accordingly. The review page shows the final mask, the proposal's outline and the difference;
screenshots go to ``docs/img/review_page.png`` and ``docs/img/dashboard.png``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from annotator_support import READY_TIMEOUT_MS, brush_stroke, log_in, make_user, make_xray_task, open_task, settle
from test_annotator_workflow import site, wait_done  # noqa: F401  (the live-server fixture and its wait)
from viewer_support import VIEWPORT, wait_for_js

pytestmark = [pytest.mark.e2e]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
REVIEW = "window.__pleuraReview"


def open_review(page: Any, base_url: str, task_id: int) -> None:
    """Open the review page from the review queue and wait until image, mask and overlays are shown."""
    page.goto(f"{base_url}/review/")
    page.locator(f"tr[data-task='{task_id}']").get_by_role("link", name=f"Review task {task_id}").click()
    wait_for_js(
        page, "document.querySelector('#review')?.dataset.pageState && document.querySelector('#review').dataset.pageState !== 'loading'",
        timeout=READY_TIMEOUT_MS)
    state = page.evaluate("document.querySelector('#review').dataset.pageState")
    assert state == "ready", f"{state}: {page.get_by_test_id('notice').inner_text()} {page.console_messages[-5:]}"
    page.evaluate(f"async () => {{ {REVIEW} = await window.pleuraReview; }}")
    settle(page)


def wait_review_done(page: Any) -> None:
    wait_for_js(page, "document.querySelector('#review').dataset.pageState === 'done'", timeout=60_000)


def dashboard_tables(page: Any, base_url: str, project_id: int) -> dict[str, dict[str, list[str]]]:
    """Open the dashboard, wait until every chart is drawn, and read its tables (first column → the rest)."""
    page.goto(f"{base_url}/projects/{project_id}/dashboard/")
    wait_for_js(page, "document.querySelector('#dashboard')?.dataset.state === 'ready'", timeout=READY_TIMEOUT_MS)
    assert page.locator("#dashboard canvas").count() >= 8, "charts were not drawn"
    tables = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('[data-figure]')].map((s) => [
        s.dataset.figure,
        Object.fromEntries([...s.querySelectorAll('tbody tr')].map((tr) => {
            const cells = [...tr.children].map((c) => c.textContent);
            return [cells[0], cells.slice(1)];
        }))]))""")
    return tables


def viewport_pixels(page: Any) -> np.ndarray:
    png = page.locator("[data-testid=viewport]").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_return_with_comment_fix_resubmit_approve(browser, site, artifacts: Path) -> None:  # noqa: F811
    from annotation import services
    from annotation.models import AnnotationTask, MaskRevision, RevisionStatus, TaskStatus

    xt = make_xray_task(site.project)
    make_user(site.project, "rev", role="reviewer")
    ann = browser.new_context(viewport=VIEWPORT).new_page()
    ann.console_messages = []
    rev = browser.new_context(viewport=VIEWPORT).new_page()
    rev.console_messages = []

    log_in(ann, site.url, "ann")
    open_task(ann, site.url, xt.task.pk)
    brush_stroke(ann, [(108, 226), (148, 226)], label=2)
    ann.get_by_role("button", name="Submit edits").click()
    wait_done(ann)
    first = MaskRevision.objects.filter(target_key=xt.revision.target_key).order_by("-number").first()

    # the reviewer sees it in the review queue; the page shows mask, proposal outline and difference
    log_in(rev, site.url, "rev")
    open_review(rev, site.url, xt.task.pk)
    details = rev.get_by_test_id("edit-measure").inner_text()
    assert "Pixels added" in details and "Dice right / left" in details
    with_difference = viewport_pixels(rev)
    rev.locator("[data-overlay=difference]").uncheck()
    settle(rev)
    without = viewport_pixels(rev)
    changed = np.abs(with_difference - without).sum(axis=2) > 30
    assert changed.sum() > 50, "hiding the difference overlay changed nothing on screen"
    rev.locator("[data-overlay=difference]").check()
    settle(rev)
    rev.screenshot(path=str(DOCS_IMG / "review_page.png"))

    rev.get_by_role("button", name="Return to annotator…").click()
    rev.get_by_test_id("return-comment").fill("The left base is cut off: extend it down to the diaphragm.")
    rev.get_by_role("button", name="Return with this comment").click()
    wait_review_done(rev)
    first.refresh_from_db()
    assert first.status == RevisionStatus.RETURNED
    before = dashboard_tables(rev, site.url, site.project.pk)
    assert before["summary"]["Done"] == ["0"] and before["summary"]["Returned for changes"] == ["1"]
    assert before["review_outcomes"]["ann"][:2] == ["0", "1"]  # approve, return
    assert AnnotationTask.objects.get(pk=xt.task.pk).status == TaskStatus.RETURNED

    # the annotator finds it in the queue, sees the comment, fixes and resubmits
    ann.goto(f"{site.url}/queue/")
    row = ann.locator(f"tr[data-task='{xt.task.pk}']")
    assert "Returned for changes" in row.inner_text()
    row.get_by_role("link").click()
    wait_for_js(ann, "document.querySelector('#annotate').dataset.pageState === 'ready'", timeout=READY_TIMEOUT_MS)
    ann.evaluate("async () => { window.__pleuraPage = await window.pleuraPage; }")
    outcome = ann.get_by_test_id("outcome").inner_text()
    assert "Returned by rev" in outcome and "extend it down to the diaphragm" in outcome, outcome
    brush_stroke(ann, [(108, 236), (148, 236)], label=2)
    ann.get_by_role("button", name="Submit edits").click()
    wait_done(ann)
    second = MaskRevision.objects.filter(target_key=xt.revision.target_key).order_by("-number").first()
    assert second.parent_id == first.pk and second.status == RevisionStatus.SUBMITTED

    open_review(rev, site.url, xt.task.pk)
    assert "extend it down" in rev.get_by_test_id("history").inner_text()
    rev.get_by_role("button", name="Approve", exact=True).click()
    wait_review_done(rev)
    assert "is curated" in rev.get_by_test_id("outcome").inner_text()
    second.refresh_from_db()
    assert second.status == RevisionStatus.APPROVED
    assert AnnotationTask.objects.get(pk=xt.task.pk).status == TaskStatus.DONE
    assert list(services.curated_revisions(site.project, "cxr")) == [second]
    rev.goto(f"{site.url}/review/")
    assert rev.locator(f"tr[data-task='{xt.task.pk}']").count() == 0
    after = dashboard_tables(rev, site.url, site.project.pk)
    assert after["summary"]["Done"] == ["1"] and after["summary"]["Returned for changes"] == ["0"]
    assert after["summary"]["curated in range"] == ["1"]
    assert after["review_outcomes"]["ann"][:2] == ["1", "1"]
    assert after["outcomes"]["edited"] == ["2"]  # the submit and the resubmit
    assert after["annotators"]["ann"][:2] == ["2", "0"]  # closed, accepted
    csv = rev.evaluate(f"fetch('/api/quality/dashboard/{site.project.pk}/outcomes.csv').then((r) => r.text())")
    assert csv.splitlines()[0] == "outcome,tasks" and "edited,2" in csv.splitlines()
    rev.set_viewport_size({"width": 1280, "height": 1400})
    rev.screenshot(path=str(DOCS_IMG / "dashboard.png"))


def test_a_double_read_pair_is_adjudicated(browser, site) -> None:  # noqa: F811
    from annotation import workflow
    from annotation.models import DoubleRead, DoubleReadStatus, ReviewPolicy, RevisionStatus
    from accounts.models import User

    ReviewPolicy.objects.update_or_create(project=site.project, defaults={"double_read_fraction": 1.0,
                                                                         "agreement_threshold": 0.999})
    xt = make_xray_task(site.project)
    make_user(site.project, "ann2")
    make_user(site.project, "rev", role="reviewer")
    proposal = xt.revision
    first_labels = xt.labels[None].copy()
    first_labels[0, 226:236, 100:160] = 2
    first = workflow.submit(xt.task.pk, User.objects.get(username="ann"), proposal.pk,
                            workflow.MaskUpload(shape=first_labels.shape, data=first_labels.tobytes(), time_spent_s=20)).revision
    workflow.accept(xt.task.pk, User.objects.get(username="ann2"), proposal.pk, 10)
    pair = DoubleRead.objects.get(task=xt.task)
    assert pair.status == DoubleReadStatus.ADJUDICATION

    rev = browser.new_context(viewport=VIEWPORT).new_page()
    rev.console_messages = []
    log_in(rev, site.url, "rev")
    open_review(rev, site.url, xt.task.pk)
    text = rev.get_by_test_id("agreement").inner_text()
    assert "Reading 1 by ann" in text and "reading 2 by ann2" in text and "below the project's threshold" in text
    assert not rev.get_by_role("button", name="Return to annotator…").is_visible()
    rev.get_by_role("button", name="Choose reading 1 (ann)").click()
    wait_review_done(rev)
    first.refresh_from_db()
    pair.refresh_from_db()
    assert first.status == RevisionStatus.APPROVED and pair.status == DoubleReadStatus.ADJUDICATED
