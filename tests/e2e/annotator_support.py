"""Support for the annotator browser tests: data through the real services, log in, open a task, stroke."""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from viewer_support import ct_lung_labels, ct_series, wait_for_js, xray_lung_labels, xray_pixels

# Playwright's sync API keeps an asyncio loop running in the test thread; Django refuses database
# calls from a thread with a running loop unless told that this (test-only) use is safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

PASSWORD = "pw-e2e-123456"
READY_TIMEOUT_MS = 180_000  # generous: the CI machine may be busy (software WebGL on 2 cores)
#: The page object of the task page (window.pleuraPage is the promise mountAnnotationPage returns).
VIEWER = "window.__pleuraPage.mounted.viewer"


@dataclass
class XrayTask:
    task: Any
    revision: Any
    labels: np.ndarray


def xray_png_bytes(variant: int = 0) -> bytes:
    """The synthetic chest as PNG; ``variant`` changes a few corner pixels so each upload is a new image."""
    pixels = xray_pixels()
    pixels[0, :8] = (np.arange(8) * 7 + variant) % 256
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def make_xray_task(project: Any, name: str = "chest.png", confidence: float = 0.6) -> XrayTask:
    """Ingest the synthetic 256×256 chest PNG through the real ingest and store a model proposal for it."""
    from annotation import services
    from annotation.models import AnnotationTask, RevisionSource, RevisionStatus
    from imaging.models import Series
    from imaging.services import ingest
    from imaging.sources import SourceFile

    result = ingest(project, [SourceFile(name, xray_png_bytes(sum(name.encode())))])
    series = Series.objects.get(pk=result.series[0].pk)
    labels = xray_lung_labels()
    revision = services.create_revision(
        series=series, instance=series.instances.get(), labels=labels, source=RevisionSource.MODEL,
        status=RevisionStatus.PROPOSED, method="model", confidence=confidence)
    return XrayTask(AnnotationTask.objects.get(target_key=revision.target_key), revision, labels)


CT_WARNING = "1 missing slice(s) between 5.0 and 10.0 mm: filled by interpolation"


def make_ct_task(project: Any) -> XrayTask:
    """Ingest the synthetic 5-slice CT DICOM series (implicit VR, as many scanners send it) through the
    real ingest and store a CT proposal for it."""
    from annotation import services
    from annotation.models import AnnotationTask, RevisionSource, RevisionStatus
    from imaging.models import Series
    from imaging.services import ingest
    from imaging.sources import SourceFile

    result = ingest(project, [SourceFile(f"ct{z}.dcm", data) for z, data in enumerate(ct_series(implicit_vr=True))])
    series = Series.objects.get(pk=result.series[0].pk)
    labels = ct_lung_labels()
    revision = services.create_revision(
        series=series, instance=None, labels=labels, source=RevisionSource.MODEL, status=RevisionStatus.PROPOSED,
        spacing=(2.5, 1.0, 1.0), method="model", confidence=0.5, geometry={"warnings": [CT_WARNING]})
    return XrayTask(AnnotationTask.objects.get(target_key=revision.target_key), revision, labels)


def make_user(project: Any, username: str, role: str = "annotator") -> Any:
    from accounts.models import Membership, User

    user = User.objects.create_user(username, password=PASSWORD)
    Membership.objects.create(user=user, project=project, role=role)
    return user


def log_in(page: Any, base_url: str, username: str) -> None:
    page.set_default_timeout(READY_TIMEOUT_MS)
    page.goto(f"{base_url}/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/queue/")


def open_task(page: Any, base_url: str, task_id: int) -> None:
    """Open the task page and wait until the viewer is ready (image and mask loaded)."""
    page.goto(f"{base_url}/tasks/{task_id}/")
    wait_ready(page)


def wait_ready(page: Any) -> None:
    wait_for_js(page, "document.querySelector('#annotate')?.dataset.pageState && document.querySelector('#annotate').dataset.pageState !== 'loading'",
        timeout=READY_TIMEOUT_MS)
    state = page.evaluate("document.querySelector('#annotate').dataset.pageState")
    notice = page.locator("[data-testid=notice]").inner_text()
    assert state == "ready", f"page state {state}: {notice}; console: {page.console_messages[-10:]}"
    page.evaluate("async () => { window.__pleuraPage = await window.pleuraPage; }")
    settle(page)


def settle(page: Any) -> None:
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def labelmap(page: Any) -> np.ndarray:
    """The viewer's current mask, (D, H, W) uint8."""
    shape, data = page.evaluate(f"() => {{ const m = {VIEWER}.getLabelmap(); return [m.shape, Array.from(m.data)]; }}")
    return np.asarray(data, np.uint8).reshape(shape)


def brush_stroke(page: Any, image_points: list[tuple[float, float]], label: int = 2, radius: float = 6.0,
                 image_size: int = 256) -> list[tuple[float, float]]:
    """Paint ``label`` along image points (column, row) of a square ``image_size`` image with the
    brush; returns the image path actually hit."""
    page.keyboard.press("b")
    page.keyboard.press(str(label))
    page.evaluate(f"{VIEWER}.setBrushSize({radius})")
    box = page.locator("[data-testid=viewport]").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    scale = min(box["width"], box["height"]) / image_size
    half = image_size / 2
    client = [(cx + (x - half) * scale, cy + (y - half) * scale) for x, y in image_points]
    path = [tuple(page.evaluate(f"([x, y]) => {VIEWER}.clientToPixel(x, y)", list(p))) for p in client]
    before = page.evaluate(f"{VIEWER}.getEditCount()")
    page.mouse.move(*client[0])
    page.mouse.down()
    for p in client[1:]:
        page.mouse.move(*p, steps=2)
    page.mouse.up()
    wait_for_js(page, f"{VIEWER}.getEditCount() > {before}", timeout=60_000)
    settle(page)
    return path


def close_pages_and_wait_for_requests(browser: Any, timeout_s: float = 20.0, quiet_s: float = 0.5) -> None:
    """Close every browser context, then wait until no other session is busy in the test database.

    Busy = running a statement or idle inside a transaction (what holds row locks). Quiet for
    ``quiet_s`` in a row, so that a request sent while the pages closed has arrived and ended.
    """
    from django.db import connection

    for context in list(browser.contexts):
        context.close()
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')")
            busy = cursor.fetchone()[0]
        if busy:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.05)
