"""The `src/main.ts` entry as a Django page will use it: found through the Vite manifest,
publishing `window.Pleura` (mountViewer, API client helpers, mask codec, Autosaver, leave guard)."""

from __future__ import annotations

from pathlib import Path

import pytest
from viewer_support import ViewerServer, wait_for_js, xray_lung_labels

pytestmark = pytest.mark.e2e

MOUNT_JS = """async () => {
  const P = window.Pleura;
  const labelmap = await P.fetchMask('/mask/xray');
  const imageIds = P.instanceImageIds({instances: [{sop_instance_uid: '1', url: '/dicom/xray.dcm'}]});
  const {viewer} = await P.mountViewer(document.getElementById('root'), {imageIds, modality: 'CR', labelmap});
  window.viewer = viewer;
  const {data} = viewer.getLabelmap();
  const packed = await P.maskCodec.gzip(data);
  const back = await P.maskCodec.gunzip(packed);
  return {
    imageIds,
    voxels: data.length,
    labelled: data.filter((v) => v > 0).length,
    gzipBytes: packed.length,
    roundTrip: back.length === data.length && back.every((v, i) => v === data[i]),
    endpoints: [P.ENDPOINTS.draft(7), P.ENDPOINTS.submit(7), P.ENDPOINTS.revisionMask(3)],
  };
}"""

AUTOSAVE_JS = """async () => {
  const P = window.Pleura;
  const saves = [];
  window.autosaver = new P.Autosaver(window.viewer, async () => {
    const mask = window.viewer.getLabelmap();
    saves.push((await P.maskCodec.encodeMask(mask.data)).body.length);
  }, {delayMs: 200});
  window.saves = saves;
  P.installLeaveGuard(() => window.viewer.isDirty());
}"""


def test_main_entry_mounts_viewer_and_autosaves(page, viewer_server: ViewerServer, artifacts: Path) -> None:
    page.goto(viewer_server.url("/page"))
    wait_for_js(page, "window.Pleura !== undefined", timeout=30_000)
    result = page.evaluate(MOUNT_JS)
    labels = xray_lung_labels()
    assert result["imageIds"] == [f"wadouri:{viewer_server.url('/dicom/xray.dcm')}"]
    assert result["voxels"] == labels.size and result["labelled"] == int((labels > 0).sum())
    assert result["roundTrip"] and result["gzipBytes"] < labels.size / 20, result
    assert result["endpoints"] == [
        "/api/annotation/tasks/7/draft",
        "/api/annotation/tasks/7/submit",
        "/api/annotation/revisions/3/mask",
    ]
    assert page.locator(".pv-status").get_attribute("data-state") == "ready"
    assert page.locator(".pv-toolbar button").count() >= 12, "toolbar not styled/mounted"

    # Autosave after an edit, and the leave guard while unsaved.
    page.evaluate(AUTOSAVE_JS)
    box = page.locator("[data-testid=viewport]").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.85
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 40, cy, steps=2)
    page.mouse.up()
    wait_for_js(page, "window.viewer.isDirty()", timeout=5000)
    page.evaluate("window.autosaver.notifyEdit()")
    wait_for_js(page, "window.saves.length === 1 && !window.viewer.isDirty()", timeout=10_000)
    assert page.evaluate("window.autosaver.state") == "saved"
    page.screenshot(path=str(artifacts / "page_entry.png"))
    violations = [m for m in page.console_messages if "Content Security Policy" in m]
    assert not violations, violations  # the page runs under the site's policy (viewer_support.page_like_django)

    page.evaluate("window.viewer.undo()")
    assert page.evaluate("window.viewer.isDirty()")
    # The guard cancels beforeunload (the browser then asks the user) only while unsaved.
    fire = "() => { const e = new Event('beforeunload', {cancelable: true}); window.dispatchEvent(e); return e.defaultPrevented; }"
    assert page.evaluate(fire) is True, "leaving with unsaved edits would not warn"
    page.evaluate("window.viewer.markSaved()")
    assert page.evaluate(fire) is False, "leaving with everything saved would still warn"


COMPRESSED_JS = """async () => {
  const P = window.Pleura;
  const imageIds = P.instanceImageIds({instances: [{sop_instance_uid: '1', url: '/dicom/xray-jpegls.dcm'}]});
  const {viewer} = await P.mountViewer(document.getElementById('root'), {imageIds, modality: 'CR'});
  window.viewer = viewer;
  return imageIds;
}"""


def test_compressed_image_decodes_under_the_sites_policy(page, viewer_server: ViewerServer) -> None:
    """A JPEG-LS instance goes through the CharLS WebAssembly codec (in the viewer's decode worker,
    whose script is a static file like in production) and is shown under the site's page policy."""
    page.goto(viewer_server.url("/page"))
    wait_for_js(page, "window.Pleura !== undefined", timeout=30_000)
    page.evaluate(COMPRESSED_JS)
    state = wait_for_js(page, "['ready', 'error'].includes(document.querySelector('.pv-status')?.dataset.state)"
                              " && document.querySelector('.pv-status').dataset.state", timeout=60_000)
    violations = [m for m in page.console_messages if "Content Security Policy" in m]
    assert not violations, violations
    assert state == "ready", page.console_messages[-10:]
