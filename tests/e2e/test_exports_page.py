"""The exports page in headless Chromium: an ML engineer queues an export, sees it finish and downloads it;
an empty selection shows the server's message. Screenshot: ``test-artifacts/e2e/exports_page.png``."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

import numpy as np

from annotator_support import log_in, make_user, xray_png_bytes
from viewer_support import ARTIFACTS, wait_for_js

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def site(transactional_db: Any, live_server: Any, settings: Any, tmp_path: Path, browser: Any) -> Any:
    """A live server with one project holding two X-rays with curated (approved) labels, exports run in-process."""
    from annotation.models import RevisionSource, RevisionStatus
    from annotation.services import create_revision
    from config.celery import app as celery_app
    from imaging.models import Project
    from imaging.services import ingest
    from imaging.signals import series_ingested
    from imaging.sources import SourceFile
    from modeling.receivers import connect_ingest_hook

    settings.PLEURA_DATA_DIR = tmp_path
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "media")}}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    previous = celery_app.conf.task_always_eager
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = True
    project = Project.objects.create(name="e2e-exports")
    series_ingested.disconnect(dispatch_uid="modeling.queue_proposals_on_ingest")  # labels are given: no model
    try:
        for seed in range(2):
            series = ingest(project, [SourceFile(f"c{seed}.png", xray_png_bytes(seed))]).series[0]
            labels = np.zeros((series.rows, series.columns), np.uint8)
            labels[10:30, 10:30], labels[10:30, 50:70] = 1, 2
            create_revision(series=series, instance=series.instances.get(), labels=labels,
                            source=RevisionSource.PERSON, status=RevisionStatus.APPROVED)
    finally:
        connect_ingest_hook()
    make_user(project, "engineer", role="ml_engineer")
    yield type("Site", (), {"url": live_server.url, "project": project})
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = previous


def test_an_ml_engineer_exports_from_the_page(site: Any, browser: Any) -> None:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    try:
        log_in(page, site.url, "engineer")
        page.set_default_timeout(60_000)
        page.goto(f"{site.url}/exports/")
        page.get_by_label("Format").select_option("coco")
        page.get_by_label("Modality").select_option("CT")
        page.locator("#export-submit").click()
        wait_for_js(page, "document.getElementById('message').textContent.includes('matches no case')")
        assert page.locator("#message").get_attribute("class") == "errors"
        page.get_by_label("Modality").select_option("xray")
        page.locator("#export-submit").click()
        link = page.get_by_role("link", name="download")
        link.wait_for(timeout=60_000)
        assert "succeeded" in page.locator("#jobs").inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "exports_page.png"), full_page=True)
        with page.expect_download() as download:
            link.click()
        archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
        data = json.loads(archive.read("manifest.json"))
        assert data["format"] == "coco" and data["case_count"] == 2
        assert {"annotations/train.json", "annotations/test.json"} <= set(archive.namelist())
    finally:
        context.close()
