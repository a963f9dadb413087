"""Annotator workflow end to end: Django live server, real services and data, the built viewer in headless Chromium.

log in → my queue → open a task → image and mask shown → brush stroke → submit (the server's new
revision differs from its parent exactly where the stroke painted); accept; reject with a reason;
the 409 conflict flow in two browser contexts (keep mine, or reload theirs); a task another
annotator holds opens read-only; a CT series task (slice navigation, a stroke on one slice); a
reload restores the autosaved draft; an annotator cannot open another project's task; after
submit/reject the page turns read-only and says what happened; reopening a task in review tells
its last outcome; leaving the page saves the draft, then gives the claim up, and so does logging
out. Screenshots go to ``test-artifacts/e2e/annotator_*.png``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from annotator_support import (
    CT_WARNING,
    VIEWER,
    brush_stroke,
    close_pages_and_wait_for_requests,
    labelmap,
    log_in,
    make_ct_task,
    make_user,
    make_xray_task,
    open_task,
    settle,
    wait_ready,
)
from viewer_support import VIEWPORT, distance_to_path, wait_for_js

pytestmark = [pytest.mark.e2e]

RADIUS = 6.0
DONE_TIMEOUT_MS = 60_000


@pytest.fixture
def site(transactional_db: Any, live_server: Any, settings: Any, tmp_path: Path, viewer_dist: Path, browser: Any) -> Any:
    """A live server on a fresh database and storage, Celery in-process, one project with one annotator.

    At the end the browser's pages are closed and their last requests (a claim given up on
    leaving, an autosave) allowed to finish before the database is flushed: a request holding
    row locks while the flush truncates the tables deadlocks in PostgreSQL.
    """
    from config.celery import app as celery_app
    from imaging.models import Project

    settings.PLEURA_DATA_DIR = tmp_path
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "media")}}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    previous = celery_app.conf.task_always_eager
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = True
    project = Project.objects.create(name="e2e-chest")
    make_user(project, "ann")
    yield type("Site", (), {"url": live_server.url, "project": project})
    close_pages_and_wait_for_requests(browser)
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = previous


def shot(page: Any, path: Path | None = None) -> np.ndarray:
    png = page.locator("[data-testid=viewport]").screenshot()
    if path:
        path.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def latest_revision(target_key: str) -> Any:
    """The newest revision of a target (ingest may have stored a real model proposal before ours)."""
    from annotation.models import MaskRevision

    return MaskRevision.objects.filter(target_key=target_key).order_by("-number").first()


def wait_done(page: Any) -> None:
    """Wait until the page reports the action done; on failure, say what the page shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        wait_for_js(page, "document.querySelector('#annotate').dataset.pageState === 'done'", timeout=DONE_TIMEOUT_MS)
    except PlaywrightTimeout as exc:
        notice = page.get_by_test_id("notice").inner_text()
        raise AssertionError(f"action not done: notice {notice!r}; console {page.console_messages[-5:]}") from exc


def drag_with_the_brush_key(page: Any) -> None:
    """Press the brush shortcut and drag across the middle of the image (a stroke where editing is allowed)."""
    page.keyboard.press("b")
    box = page.locator("[data-testid=viewport]").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=4)
    page.mouse.up()


def assert_page_read_only(page: Any) -> None:
    """Editing tools, history and task actions are disabled, and a brush drag or Ctrl+Z changes nothing."""
    for name in ("Brush", "Eraser", "Right lung", "Left lung", "Undo", "Redo", "Accept mask", "Submit edits", "Reject…"):
        assert page.get_by_role("button", name=name, exact=True).is_disabled(), name
    assert page.evaluate(f"{VIEWER}.readOnly") is True and page.evaluate(f"{VIEWER}.getTool()") == "pan"
    before, edits = labelmap(page), page.evaluate(f"{VIEWER}.getEditCount()")
    drag_with_the_brush_key(page)
    page.keyboard.press("Control+z")
    settle(page)
    assert np.array_equal(labelmap(page), before) and page.evaluate(f"{VIEWER}.getEditCount()") == edits
    page.evaluate(f"{VIEWER}.resetView()")  # the drag panned the image (pan is the tool left)
    settle(page)


def open_in_contexts(browser: Any, site: Any, task_id: int, users: list[str]) -> list[Any]:
    """One browser context per user (the same user twice = two tabs on two machines), each on the task page."""
    pages = []
    for user in users:
        context = browser.new_context(viewport=VIEWPORT)
        pg = context.new_page()
        pg.console_messages = []
        pages.append(pg)
        log_in(pg, site.url, user)
        open_task(pg, site.url, task_id)
    return pages


def close_contexts(pages: list[Any]) -> None:
    for pg in pages:
        pg.context.close()


def provoke_conflict(a: Any, b: Any, target_key: str) -> tuple[Any, Any]:
    """A submits a stroke and a reviewer returns the task (a submitted task is read-only until then);
    B, still on the old parent, paints: B's autosave gets a 409.

    Returns A's revision and B's conflict dialog (visible).
    """
    from accounts.models import Membership, User
    from annotation.review import services as review_services

    brush_stroke(a, [(108, 226), (148, 226)], label=2)
    a.get_by_role("button", name="Submit edits").click()
    wait_done(a)
    theirs = latest_revision(target_key)
    reviewer, created = User.objects.get_or_create(username="conflict-reviewer")
    if created:
        Membership.objects.create(user=reviewer, project_id=theirs.project_id, role="reviewer")
    review_services.return_to_annotator(_task_id(target_key), reviewer, theirs.pk, "check the base")
    brush_stroke(b, [(108, 20), (148, 20)], label=1)  # autosave after 3 s → 409
    dialog = b.get_by_test_id("conflict-dialog")
    dialog.wait_for(state="visible", timeout=60_000)
    return theirs, dialog


def _task_id(target_key: str) -> int:
    from annotation.models import AnnotationTask

    return AnnotationTask.objects.get(target_key=target_key).pk


def test_edit_and_submit_changes_exactly_the_stroke(page, site, artifacts: Path) -> None:
    from annotation import services
    from annotation.models import MaskRevision, TaskAction

    xt = make_xray_task(site.project)
    log_in(page, site.url, "ann")
    row = page.locator(f"tr[data-task='{xt.task.pk}']")
    assert "DX" in row.inner_text()
    page.screenshot(path=str(artifacts / "annotator_queue.png"))
    row.get_by_role("link").click()
    wait_ready(page)

    # The image rendered, the mask is overlaid in its two colours, the page fits 1280×800.
    pixels = shot(page)
    grey = pixels.mean(axis=2)
    assert grey.std() > 30 and grey.max() > 150, "the viewport looks blank"
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert (b - r > 40).sum() > 5000 and ((r - b > 60) & (g - b > 20)).sum() > 5000, "mask overlay not visible"
    assert page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]") == \
        [VIEWPORT["width"], VIEWPORT["height"]]
    for name in ("Accept mask", "Submit edits", "Reject…", "Brush", "Undo", "Shortcuts (?)"):
        assert page.get_by_role("button", name=name, exact=True).is_visible(), name
    assert not page.get_by_test_id("series-warnings").is_visible()  # nothing was corrected in this image
    start = labelmap(page)
    assert np.array_equal(start[0], xt.labels)

    path = brush_stroke(page, [(108, 226), (128, 226), (148, 226), (148, 236)], label=2, radius=RADIUS)
    after = labelmap(page)
    changed = after != start
    ys, xs = np.nonzero(changed[0])
    assert len(xs) > 200, f"the stroke changed only {len(xs)} pixels"
    assert distance_to_path(np.stack([xs, ys], 1).astype(float), path).max() <= RADIUS + 1.5
    assert page.get_by_role("button", name="Accept mask").is_disabled(), "Accept stays offered after an edit"
    page.screenshot(path=str(artifacts / "annotator_viewer.png"))

    page.get_by_role("button", name="Submit edits").click()
    wait_done(page)
    assert page.get_by_test_id("back-to-queue").is_visible()
    revision = MaskRevision.objects.filter(target_key=xt.revision.target_key).order_by("-number").first()
    assert revision.parent_id == xt.revision.pk and revision.author.username == "ann"
    server_diff = services.read_labels(revision) != services.read_labels(xt.revision)
    assert np.array_equal(server_diff, changed[0]), "the stored revision differs from its parent outside the stroke"
    assert np.array_equal(services.read_labels(revision), after[0])
    assert TaskAction.objects.get(revision=revision).time_spent_s > 0
    outcome = page.get_by_test_id("outcome")
    assert outcome.inner_text().startswith(f"Submitted as revision {revision.number} — in review."), outcome.inner_text()
    assert outcome.get_by_test_id("back-to-queue").is_visible()
    assert_page_read_only(page)
    assert page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]") == \
        [VIEWPORT["width"], VIEWPORT["height"]]  # the banner takes its row; the page still fits
    page.screenshot(path=str(artifacts / "annotator_submitted.png"))
    assert not [m for m in page.console_messages if m.startswith("pageerror")], page.console_messages


def test_accept_and_reject_with_a_reason(page, site, artifacts: Path) -> None:
    from annotation.models import TaskAction

    first = make_xray_task(site.project, "a.png")
    second = make_xray_task(site.project, "b.png")
    log_in(page, site.url, "ann")
    open_task(page, site.url, first.task.pk)
    # Focus order: the viewer toolbar first, then the task actions (Accept, Submit, Reject).
    page.get_by_role("button", name="Brush", exact=True).focus()
    order: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        order.append(page.evaluate("(document.activeElement.getAttribute('aria-label') || document.activeElement.textContent).trim()"))
        if order[-1] == "Reject…":
            break
    assert order.index("Shortcuts (?)") < order.index("Accept mask") < order.index("Submit edits") \
        < order.index("Reject…"), order  # the viewport itself is focused by clicking it
    page.get_by_role("button", name="Accept mask").click()
    wait_done(page)
    accepted = latest_revision(first.revision.target_key)
    assert accepted.checksum == first.revision.checksum and accepted.method == "accepted"
    assert accepted.parent_id == first.revision.pk

    open_task(page, site.url, second.task.pk)
    page.get_by_role("button", name="Reject…").click()
    dialog = page.get_by_test_id("reject-dialog")
    dialog.get_by_role("radio", name="Other").check()
    dialog.get_by_role("button", name="Reject task").click()
    assert "Say why" in dialog.get_by_role("alert").inner_text()
    dialog.get_by_label("Details (required for Other)").fill("lateral projection")
    page.screenshot(path=str(artifacts / "annotator_reject_dialog.png"))
    dialog.get_by_role("button", name="Reject task").click()
    wait_done(page)
    action = TaskAction.objects.get(task=second.task)
    assert (action.kind, action.reason, action.reason_text) == ("reject", "other", "lateral projection")
    assert action.revision.status == "rejected" and action.revision.parent_id == second.revision.pk
    outcome = page.get_by_test_id("outcome").inner_text()
    assert outcome.startswith(f"Rejected (Other, “lateral projection”) as revision {action.revision.number} — in review."), \
        outcome
    assert "sent to review" not in page.get_by_test_id("notice").inner_text()
    assert_page_read_only(page)
    page.screenshot(path=str(artifacts / "annotator_rejected.png"))


def test_reopening_a_rejected_task_tells_who_rejected_it_and_why(page, site, artifacts: Path) -> None:
    from accounts.models import User
    from annotation import workflow

    xt = make_xray_task(site.project)
    workflow.reject(xt.task.pk, User.objects.get(username="ann"), xt.revision.pk, "other", "lateral projection")
    make_user(site.project, "ann2")
    log_in(page, site.url, "ann2")
    open_task(page, site.url, xt.task.pk)
    outcome = page.get_by_test_id("outcome")
    assert outcome.is_visible()
    text = outcome.inner_text()
    rejected = latest_revision(xt.revision.target_key)
    assert text.startswith(f"In review: revision {rejected.number} rejected by ann on "), text
    assert str(rejected.created_at.year) in text and "(reason: Other, “lateral projection”)." in text, text
    # in review is read-only to annotators until a reviewer returns it (issue 20)
    assert "Saving here" not in text, text
    assert "in review" in page.get_by_test_id("notice").inner_text() and "read-only" in page.get_by_test_id("notice").inner_text()
    assert_page_read_only(page)
    assert page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]") == \
        [VIEWPORT["width"], VIEWPORT["height"]]
    page.screenshot(path=str(artifacts / "annotator_reopened_rejected.png"))


def test_leaving_the_page_saves_the_draft_then_gives_the_claim_up(browser, site, artifacts: Path) -> None:
    from accounts.models import User
    from annotation import workflow
    from annotation.models import AnnotationTask

    xt = make_xray_task(site.project)
    make_user(site.project, "ann2")
    pages = open_in_contexts(browser, site, xt.task.pk, ["ann"])
    try:
        holder = pages[0]
        assert AnnotationTask.objects.get(pk=xt.task.pk).claimed_by.username == "ann"
        brush_stroke(holder, [(108, 226), (148, 226)], label=1)  # autosave would wait 3 s: leave at once
        edited = labelmap(holder)
        holder.get_by_role("link", name="My queue").click()
        holder.wait_for_url(f"{site.url}/queue/")
        # the link waits for the release: the queue it opens no longer shows the claim
        assert AnnotationTask.objects.get(pk=xt.task.pk).claimed_by is None
        row = holder.locator(f"tr[data-task='{xt.task.pk}']").inner_text()
        assert "claimed by you" not in row, row
        draft = workflow.get_draft(xt.task, User.objects.get(username="ann"))
        assert draft is not None and np.array_equal(workflow.draft_labels(draft), edited), "the edit was not saved"
        pages += open_in_contexts(browser, site, xt.task.pk, ["ann2"])
        other = pages[1]
        assert "read-only" not in other.get_by_test_id("notice").inner_text()
        assert other.get_by_role("button", name="Accept mask").is_enabled()
        assert AnnotationTask.objects.get(pk=xt.task.pk).claimed_by.username == "ann2"
        other.screenshot(path=str(artifacts / "annotator_claimed_after_leave.png"))
    finally:
        close_contexts(pages)


def test_logging_out_from_a_task_gives_the_claim_up_first(browser, site) -> None:
    from annotation.models import AnnotationTask

    xt = make_xray_task(site.project)
    pages = open_in_contexts(browser, site, xt.task.pk, ["ann"])
    try:
        holder = pages[0]
        assert AnnotationTask.objects.get(pk=xt.task.pk).claimed_by.username == "ann"
        holder.get_by_role("button", name="Log out").click()
        holder.wait_for_url(f"{site.url}/login/**")
        assert AnnotationTask.objects.get(pk=xt.task.pk).claimed_by is None, "logged out still holding the task"
        holder.goto(f"{site.url}/queue/")
        assert "/login/" in holder.url, "the log-out went through"
    finally:
        close_contexts(pages)


def test_conflict_between_two_browser_contexts(browser, site, artifacts: Path) -> None:
    from annotation import services

    xt = make_xray_task(site.project)
    pages = open_in_contexts(browser, site, xt.task.pk, ["ann", "ann"])
    a, b = pages
    try:
        theirs, dialog = provoke_conflict(a, b, xt.revision.target_key)
        assert theirs.parent_id == xt.revision.pk
        # the same user in two contexts: the dialog names the other tab, not "someone else"
        assert "You saved this task in another tab" in dialog.inner_text(), dialog.inner_text()
        assert "Someone else" not in dialog.inner_text()
        b.screenshot(path=str(artifacts / "annotator_conflict.png"))
        dialog.get_by_role("button", name="Keep mine as a new revision").click()
        wait_for_js(b, "document.querySelector('[data-testid=save-state]').dataset.state === 'saved'",
                            timeout=60_000)
        mine = labelmap(b)
        b.get_by_role("button", name="Submit edits").click()
        wait_done(b)
        latest = latest_revision(xt.revision.target_key)
        assert latest.parent_id == theirs.pk
        assert np.array_equal(services.read_labels(latest), mine[0])
    finally:
        close_contexts(pages)


def test_reload_restores_the_autosaved_draft_and_leaving_warns(page, site) -> None:
    xt = make_xray_task(site.project)
    log_in(page, site.url, "ann")
    open_task(page, site.url, xt.task.pk)
    brush_stroke(page, [(108, 226), (148, 226)], label=1)
    edited = labelmap(page)
    wait_for_js(page, "document.querySelector('[data-testid=save-state]').dataset.state === 'saved'", timeout=60_000)
    assert page.evaluate(f"{VIEWER}.isDirty()") is False

    page.reload()
    wait_ready(page)
    assert "Draft restored" in page.get_by_test_id("notice").inner_text()
    assert np.array_equal(labelmap(page), edited)

    brush_stroke(page, [(108, 20), (148, 20)], label=2)
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()  # stay on the page

    page.on("dialog", on_dialog)
    page.evaluate("() => { window.__stay = true; }")
    page.evaluate("() => location.assign('/queue/')")
    page.wait_for_timeout(500)
    assert dialogs == ["beforeunload"], f"no warning when leaving with unsaved edits: {dialogs}"
    assert page.evaluate("window.__stay") is True


def test_annotator_cannot_open_another_projects_task(page, site) -> None:
    from imaging.models import Project

    other = Project.objects.create(name="e2e-other")
    foreign = make_xray_task(other, "foreign.png")
    make_user(site.project, "ann2")
    log_in(page, site.url, "ann2")
    assert page.locator(f"tr[data-task='{foreign.task.pk}']").count() == 0
    response = page.goto(f"{site.url}/tasks/{foreign.task.pk}/")
    assert response.status == 404
    status = page.evaluate(f"fetch('/api/annotation/tasks/{foreign.task.pk}/').then((r) => r.status)")
    assert status == 404


def test_conflict_reload_their_version_shows_the_other_revision(browser, site) -> None:
    from annotation import services

    xt = make_xray_task(site.project)
    pages = open_in_contexts(browser, site, xt.task.pk, ["ann", "ann"])
    a, b = pages
    try:
        theirs, dialog = provoke_conflict(a, b, xt.revision.target_key)
        with b.expect_navigation():
            dialog.get_by_role("button", name="Reload the other tab's version").click()
        wait_ready(b)
        assert np.array_equal(labelmap(b)[0], services.read_labels(theirs)), "the reloaded page does not show their mask"
        assert b.evaluate("window.__pleuraPage.parentRevision") == theirs.pk
        assert latest_revision(xt.revision.target_key).pk == theirs.pk, "reloading must not store my edit"
    finally:
        close_contexts(pages)


def test_task_held_by_another_annotator_opens_read_only(browser, site, artifacts: Path) -> None:
    xt = make_xray_task(site.project)
    make_user(site.project, "ann2")
    pages = open_in_contexts(browser, site, xt.task.pk, ["ann", "ann2"])
    try:
        holder, other = pages
        assert holder.get_by_role("button", name="Accept mask").is_enabled()
        notice = other.get_by_test_id("notice").inner_text()
        assert "read-only" in notice, notice
        for name in ("Accept mask", "Submit edits", "Reject…"):
            assert other.get_by_role("button", name=name, exact=True).is_disabled(), name
        assert other.get_by_test_id("save-state").inner_text() == "Read-only"
        # view only: the editing tools are disabled and a drag with the brush key pressed paints nothing
        for name in ("Brush", "Eraser", "Right lung", "Left lung"):
            assert other.get_by_role("button", name=name, exact=True).is_disabled(), name
        assert other.evaluate(f"{VIEWER}.getTool()") == "pan"
        before = labelmap(other)
        drag_with_the_brush_key(other)
        settle(other)
        assert np.array_equal(labelmap(other), before) and other.evaluate(f"{VIEWER}.getEditCount()") == 0
        other.screenshot(path=str(artifacts / "annotator_read_only.png"))
    finally:
        close_contexts(pages)


def test_ct_series_task_edit_one_slice_and_submit(page, site, artifacts: Path) -> None:
    from annotation import services

    ct = make_ct_task(site.project)
    log_in(page, site.url, "ann")
    open_task(page, site.url, ct.task.pk)
    shown = labelmap(page)
    assert shown.shape == ct.labels.shape and np.array_equal(shown, ct.labels)
    assert page.evaluate(f"{VIEWER}.getSliceCount()") == ct.labels.shape[0]
    note = page.get_by_test_id("series-warnings")
    assert note.is_visible() and CT_WARNING in note.inner_text()
    assert page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]") == \
        [VIEWPORT["width"], VIEWPORT["height"]]  # the note takes its row; the page still fits
    page.evaluate(f"{VIEWER}.setSliceIndex(4)")  # the top slice: no lung in the proposal
    settle(page)
    assert page.evaluate(f"{VIEWER}.getSliceIndex()") == 4
    accept, submit = page.get_by_role("button", name="Accept mask"), page.get_by_role("button", name="Submit edits")
    assert (accept.get_attribute("data-primary"), submit.get_attribute("data-primary")) == ("true", "false")
    brush_stroke(page, [(30, 64), (50, 64)], label=1, radius=4.0, image_size=128)
    # Once edited, Submit is the highlighted action and Accept is off.
    assert (accept.get_attribute("data-primary"), submit.get_attribute("data-primary")) == ("false", "true")
    assert accept.is_disabled()
    page.screenshot(path=str(artifacts / "annotator_ct_slice.png"))
    page.get_by_role("button", name="Submit edits").click()
    wait_done(page)
    # Submitted: the page is read-only and no action stands out any more.
    assert (accept.get_attribute("data-primary"), submit.get_attribute("data-primary")) == ("false", "false")
    stored = services.read_labels(latest_revision(ct.revision.target_key))
    changed = np.flatnonzero((stored != ct.labels).any(axis=(1, 2)))
    assert changed.tolist() == [4], f"slices changed: {changed.tolist()}"
    assert (stored[4] == 1).sum() > 50 and not (stored[4] == 2).any()
    # Received as implicit VR, stored as explicit VR: the viewer parses every slice without an error.
    assert not [m for m in page.console_messages if m.startswith(("error", "pageerror"))], page.console_messages
