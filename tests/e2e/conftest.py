"""Fixtures for browser tests of the viewer (see viewer_support.py for the server and data)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from viewer_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    DIST,
    VIEWPORT,
    Resource,
    ViewerServer,
    ct_lung_labels,
    ct_series,
    handler_for,
    mask_resource,
    page_like_django,
    xray_dicom,
    xray_dicom_jpegls,
    xray_lung_labels,
)


@pytest.fixture(scope="session")
def viewer_dist() -> Path:
    if not (DIST / "harness.html").is_file() or not (DIST / ".vite" / "manifest.json").is_file():
        pytest.skip("frontend/dist is not built: run `make frontend` (npm ci && npm run build in frontend/)")
    return DIST


@pytest.fixture(scope="session")
def viewer_server(viewer_dist: Path) -> Iterator[ViewerServer]:
    resources: dict[str, Resource] = {
        "/dicom/xray.dcm": Resource(xray_dicom(), "application/dicom"),
        "/dicom/xray-jpegls.dcm": Resource(xray_dicom_jpegls(), "application/dicom"),
        "/mask/xray": mask_resource(xray_lung_labels()),
    }
    resources["/mask/ct"] = mask_resource(ct_lung_labels())
    resources["/page"] = page_like_django(json.loads((viewer_dist / ".vite" / "manifest.json").read_text()))
    for z, body in enumerate(ct_series()):
        resources[f"/dicom/ct/{z}.dcm"] = Resource(body, "application/dicom")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(resources))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ViewerServer(f"http://127.0.0.1:{server.server_address[1]}", resources)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser(viewer_dist: Path):
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set PLEURA_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.console_messages = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.console_messages.append(f"{m.type}: {m.text}"))  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.console_messages.append(f"pageerror: {e}"))  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
