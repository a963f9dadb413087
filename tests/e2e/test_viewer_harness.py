"""The built viewer bundle in a real headless Chromium: rendering, mask overlay, editing, CT scrolling.

Needs ``frontend/dist`` (``make frontend``) and ``/usr/bin/chromium``; skips with the reason otherwise.
Screenshots go to ``test-artifacts/e2e/``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image

from viewer_support import CT_SLICES, ViewerServer, ct_lung_labels, distance_to_path, xray_lung_labels

pytestmark = pytest.mark.e2e

READY_TIMEOUT_MS = 30_000

# Page-side helpers: label counts and the diff against a stored snapshot, without shipping
# whole masks back to Python.
COUNT_JS = """() => {
  const {data} = window.pleuraViewer.getLabelmap();
  const c = [0, 0, 0, 0];
  for (const v of data) c[Math.min(v, 3)]++;
  return c;
}"""
SNAPSHOT_JS = "() => { window.__snap = window.pleuraViewer.getLabelmap().data; }"
DIFF_JS = """() => {
  const {shape, data} = window.pleuraViewer.getLabelmap();
  const w = shape[2], h = shape[1], out = [];
  for (let i = 0; i < data.length; i++) {
    if (data[i] !== window.__snap[i]) out.push([i % w, Math.floor(i / w) % h, window.__snap[i], data[i]]);
  }
  return out;
}"""


def harness_url(server: ViewerServer, images: list[str], modality: str, labelmap: str | None = None) -> str:
    query = [("image", i) for i in images] + [("modality", modality)]
    if labelmap:
        query.append(("labelmap", labelmap))
    return server.url("/static/viewer/harness.html?" + urlencode(query))


def open_harness(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("window.pleuraHarness && window.pleuraHarness.state !== 'loading'", timeout=READY_TIMEOUT_MS)
    state = page.evaluate("window.pleuraHarness")
    assert state["state"] == "ready", f"harness failed: {state['error']}; console: {page.console_messages[-10:]}"
    page.wait_for_timeout(300)  # let the first frame reach the canvas


def viewport_pixels(page, path: Path | None = None) -> np.ndarray:
    """(H, W, 3) uint8 screenshot of the viewport element; saved to `path` when given."""
    png = page.locator("[data-testid=viewport]").screenshot()
    if path:
        path.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def stroke(page, points: list[tuple[float, float]]) -> list[list[int] | None]:
    """Drag the mouse through client points; returns the image pixels under them (None: off the image)."""
    pixels = [page.evaluate("([x, y]) => window.pleuraViewer.clientToPixel(x, y)", [x, y]) for x, y in points]
    page.mouse.move(*points[0])
    page.mouse.down()
    for b in points[1:]:
        # Few intermediate events: each one costs a software-GL frame in headless Chromium.
        page.mouse.move(*b, steps=2)
    page.mouse.up()
    settle(page)
    return pixels


def settle(page) -> None:
    """Wait for two animation frames, so that edits and renders queued by input have run."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def diff_after_edit(page) -> list[list[int]]:
    """Voxels changed since the last snapshot, waiting (up to 5 s) for the edit to land."""
    page.wait_for_function(DIFF_JS.replace("return out;", "return out.length > 0;"), timeout=5000)
    return page.evaluate(DIFF_JS)


def test_xray_render_overlay_brush_undo_eraser(page, viewer_server: ViewerServer, artifacts: Path) -> None:
    labels = xray_lung_labels()
    open_harness(page, harness_url(viewer_server, ["/dicom/xray.dcm"], "CR", "/mask/xray"))

    # The image rendered: a structured picture, not a blank canvas.
    shot = viewport_pixels(page, artifacts / "xray_loaded.png")
    grey = shot.mean(axis=2)
    assert grey.std() > 30 and grey.max() > 150, f"viewport looks blank: mean {grey.mean():.1f}, std {grey.std():.1f}"

    # The mask arrived intact and is drawn in its colour-blind-safe colours.
    counts = page.evaluate(COUNT_JS)
    assert counts[1] == int((labels == 1).sum()) and counts[2] == int((labels == 2).sum()) and counts[3] == 0
    r, g, b = (shot[..., k].astype(int) for k in range(3))
    blueish = (b - r > 40).sum()  # right lung, #0072B2
    orangeish = ((r - b > 60) & (g - b > 20)).sum()  # left lung, #E69F00
    assert blueish > 5000 and orangeish > 5000, f"overlay not visible: {blueish} blue, {orangeish} orange pixels"
    page.evaluate("window.pleuraViewer.toggleMask(false)")
    page.wait_for_timeout(200)
    hidden = viewport_pixels(page, artifacts / "xray_mask_hidden.png").astype(int)
    assert ((hidden[..., 2] - hidden[..., 0]) > 40).sum() < blueish / 20, "hiding the mask left its colour on screen"
    page.evaluate("window.pleuraViewer.toggleMask(true)")

    # Brush stroke with label 2 across the background between the lungs.
    page.keyboard.press("b")
    page.keyboard.press("2")
    radius = 6.0
    page.evaluate(f"window.pleuraViewer.setBrushSize({radius})")
    box = page.locator("[data-testid=viewport]").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    scale = min(box["width"], box["height"]) / labels.shape[0]  # screen px per image px
    page.evaluate(SNAPSHOT_JS)
    path = stroke(page, [(cx - 20 * scale, cy + 100 * scale), (cx, cy + 100 * scale), (cx + 20 * scale, cy + 100 * scale), (cx + 20 * scale, cy + 110 * scale)])
    changed = diff_after_edit(page)
    viewport_pixels(page, artifacts / "xray_brush.png")
    coords = np.array([[c[0], c[1]] for c in changed], float)
    dist = distance_to_path(coords, path)
    assert dist.max() <= radius + 1.5, f"brush changed pixels {dist.max():.1f} px from the stroke (radius {radius})"
    assert all(c[3] == 2 for c in changed), "brush wrote a label other than the active one"
    swept = math.pi * radius**2 + 2 * radius * 50
    assert len(changed) > 0.4 * swept, f"brush changed only {len(changed)} pixels of ~{swept:.0f}"
    assert page.evaluate("window.pleuraViewer.isDirty()")
    assert page.locator("[data-action=undo]").is_enabled(), "Undo button still disabled after a stroke"

    # Undo restores the mask exactly; redo brings the stroke back.
    page.keyboard.press("Control+z")
    settle(page)
    assert page.evaluate(DIFF_JS) == [], "undo did not restore the mask"
    page.keyboard.press("Control+y")
    assert diff_after_edit(page) == changed, "redo did not re-apply the stroke"

    # Eraser inside the right lung (image left): clears exactly a disc around the click.
    page.keyboard.press("e")
    page.evaluate(SNAPSHOT_JS)
    lung_x, lung_y = cx + (80 - 128) * scale, cy + (125 - 128) * scale
    erase_path = stroke(page, [(lung_x, lung_y), (lung_x + 8 * scale, lung_y)])
    erased = diff_after_edit(page)
    viewport_pixels(page, artifacts / "xray_erased.png")
    assert all(c[2] == 1 and c[3] == 0 for c in erased), "the eraser did not turn right lung into background"
    ecoords = np.array([[c[0], c[1]] for c in erased], float)
    assert distance_to_path(ecoords, erase_path).max() <= radius + 1.5
    assert len(erased) > 0.6 * (math.pi * radius**2 + 2 * radius * 8)

    # Help overlay lists the shortcuts.
    page.keyboard.press("?")
    assert page.locator(".pv-help").is_visible()
    assert "Undo" in page.locator(".pv-help").inner_text()
    page.screenshot(path=str(artifacts / "xray_help.png"))
    page.keyboard.press("Escape")
    assert not page.locator(".pv-help").is_visible()
    assert not [m for m in page.console_messages if m.startswith("pageerror")], page.console_messages


def test_controls_are_labelled_and_fit_1280x800(page, viewer_server: ViewerServer, artifacts: Path) -> None:
    open_harness(page, harness_url(viewer_server, ["/dicom/xray.dcm"], "CR", "/mask/xray"))
    names = page.eval_on_selector_all(
        ".pv-toolbar button, .pv-toolbar input",
        "els => els.map(e => (e.labels && e.labels.length ? e.labels[0].textContent : e.textContent).trim())",
    )
    assert names and all(names), f"unlabelled controls: {names}"
    page.locator("body").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.tool") == "brush", "focus does not start at the first tool"
    size = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    assert size[0] <= 1280 and size[1] <= 800, f"page overflows 1280x800: {size}"
    vp = page.locator("[data-testid=viewport]").bounding_box()
    assert vp["height"] >= 600, f"viewport only {vp['height']} px high at 1280x800"
    size = page.evaluate("window.pleuraViewer.getBrushSize()")
    page.keyboard.press("Escape")  # nothing open: must not break anything
    page.keyboard.press("]")
    assert page.evaluate("window.pleuraViewer.getBrushSize()") > size
    slider = int(page.locator("[data-control=brush-size]").input_value())
    assert slider == math.floor(page.evaluate("window.pleuraViewer.getBrushSize()") + 0.5)  # JS Math.round


def test_ct_stack_presets_and_scrolling(page, viewer_server: ViewerServer, artifacts: Path) -> None:
    images = [f"/dicom/ct/{z}.dcm" for z in range(CT_SLICES)]
    labels = ct_lung_labels()
    open_harness(page, harness_url(viewer_server, images, "CT", "/mask/ct"))
    viewer = "window.pleuraViewer"
    assert page.evaluate(f"{viewer}.shape") == [CT_SLICES, 128, 128]
    per_slice = page.evaluate(
        "() => { const {shape, data} = window.pleuraViewer.getLabelmap(); const n = shape[1] * shape[2];"
        " return Array.from({length: shape[0]}, (_, z) => data.subarray(z * n, (z + 1) * n).filter((v) => v > 0).length); }"
    )
    assert per_slice == [int((labels[z] > 0).sum()) for z in range(CT_SLICES)], "mask slices not in instance order"
    start = page.evaluate(f"{viewer}.getSliceIndex()")
    assert start == CT_SLICES // 2
    shot = viewport_pixels(page, artifacts / "ct_lung_window.png").astype(int)
    lung = shot.mean(axis=2)
    assert lung.std() > 30, "CT slice looks blank"
    assert ((shot[..., 2] - shot[..., 0]) > 40).sum() > 2000, "mask overlay missing on a slice that has one"
    page.evaluate(f"{viewer}.setSliceIndex(0)")
    settle(page)
    empty = viewport_pixels(page, artifacts / "ct_slice0_no_mask.png").astype(int)
    assert ((empty[..., 2] - empty[..., 0]) > 40).sum() < 50, "overlay drawn on a slice whose mask is empty"
    page.evaluate(f"{viewer}.setSliceIndex({start})")
    settle(page)

    # Slice scrolling with keys and the wheel changes the slice and the picture.
    page.locator("[data-testid=viewport]").click(position={"x": 5, "y": 5}, button="middle")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"{viewer}.getSliceIndex() === {start + 1}", timeout=5000)
    page.wait_for_timeout(200)
    after_key = viewport_pixels(page, artifacts / "ct_next_slice.png").mean(axis=2)
    assert np.abs(after_key - lung).mean() > 1.0, "the picture did not change with the slice"
    assert page.locator(".pv-slice").inner_text() == f"Slice {start + 2} / {CT_SLICES}"
    box = page.locator("[data-testid=viewport]").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -120)
    page.wait_for_function(f"{viewer}.getSliceIndex() === {start}", timeout=5000)

    # Presets: mediastinum window makes lung tissue (−850 HU) black and soft tissue grey.
    page.keyboard.press("k")
    page.wait_for_timeout(200)
    mediastinum = viewport_pixels(page, artifacts / "ct_mediastinum_window.png").mean(axis=2)
    assert np.abs(mediastinum - lung).mean() > 2.0, "the mediastinum preset did not change the window"
    # Soft tissue (40 HU) sits at the window level, mid-grey; lung (-850 HU) is black: checks the rescale too.
    h, w = mediastinum.shape
    body = mediastinum[int(h * 0.82), w // 2 - 20 : w // 2 + 20]
    assert abs(body.mean() - 128) < 25, f"40 HU shows as {body.mean():.0f}, expected mid-grey"

    # Zoom (right-drag or Z tool), pan (P tool) and reset (R).
    page.keyboard.press("l")
    page.keyboard.press("z")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    settle(page)
    before = viewport_pixels(page).astype(float)
    stroke(page, [(cx, cy), (cx, cy - 150)])
    zoomed = viewport_pixels(page, artifacts / "ct_zoomed.png").astype(float)
    assert np.abs(zoomed - before).mean() > 3.0, "zoom did not change the view"
    page.keyboard.press("p")
    stroke(page, [(cx, cy), (cx + 150, cy)])
    panned = viewport_pixels(page, artifacts / "ct_panned.png").astype(float)
    assert np.abs(panned - zoomed).mean() > 3.0, "pan did not move the view"
    page.keyboard.press("r")
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    settle(page)
    reset = viewport_pixels(page).astype(float)
    assert np.abs(reset - before).mean() < 1.0, "reset did not restore the view"

    # Brush on a CT slice touches that slice only.
    page.keyboard.press("b")
    page.keyboard.press("1")
    page.evaluate(SNAPSHOT_JS)
    stroke(page, [(cx - 30, cy), (cx + 30, cy)])
    diff_after_edit(page)
    assert page.evaluate(f"{viewer}.changedSlices()") == [start]
    viewport_pixels(page, artifacts / "ct_brush.png")
    assert not [m for m in page.console_messages if m.startswith("pageerror")], page.console_messages


def test_load_failure_is_shown_to_the_user(page, viewer_server: ViewerServer, artifacts: Path) -> None:
    page.goto(harness_url(viewer_server, ["/dicom/missing.dcm"], "CR"))
    page.wait_for_function("window.pleuraHarness.state !== 'loading'", timeout=READY_TIMEOUT_MS)
    assert page.evaluate("window.pleuraHarness.state") == "error"
    status = page.locator(".pv-status")
    assert status.get_attribute("role") == "alert"
    text = status.inner_text()
    assert "could not be loaded" in text and "missing.dcm" in text and "HTTP 404" in text, text
    page.screenshot(path=str(artifacts / "load_error.png"))
