"""Viewer benchmark: an X-ray task page in headless Chromium against a local Django server.

Measures, after navigation to ``/tasks/<id>/`` (``performance.now()`` from the navigation start):
time until the image is shown, time until the mask is shown, and the round trip of a draft save
(the page's own client: gzip in the browser → PUT → server decode, checks, storage → answer).
Issue 6 targets: image ≤ 1 s, mask ≤ 1.5 s, save ≤ 300 ms. The first load is reported apart
(cold HTTP cache: the ~4 MB viewer bundle), then the median and worst of warm loads.

Everything runs in a throw-away data folder with an SQLite database (the embedded default); the
task is the synthetic 256×256 chest radiograph of the e2e tests, ingested through the real ingest
with a stored model proposal. Needs ``frontend/dist`` (``make frontend``) and ``/usr/bin/chromium``.

Usage: ``python bench/bench_viewer.py --out bench/results/viewer.json [--loads 6] [--saves 10]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGETS_MS = {"image_ms": 1000.0, "mask_ms": 1500.0, "save_ms": 300.0}
logger = logging.getLogger("bench.viewer")


def _setup_django(data_dir: Path) -> None:
    os.environ.pop("DATABASE_URL", None)
    os.environ["PLEURA_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop here
    for path in (REPO / "backend", REPO / "tests" / "e2e"):
        sys.path.insert(0, str(path))
    import django
    from django.core.management import call_command

    django.setup()
    from config.celery import app as celery_app

    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = True
    call_command("migrate", verbosity=0, interactive=False)


def _serve() -> tuple[str, Any]:
    """A threaded WSGI server on 127.0.0.1 serving the app and static files (as runserver does)."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(StaticFilesHandler(get_wsgi_application()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1),
            "min": round(min(values), 1), "n": len(values)}


def run(loads: int, saves: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from accounts.models import Membership, User
    from annotator_support import PASSWORD, make_xray_task
    from imaging.models import Project
    from viewer_support import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

    project = Project.objects.create(name="bench-viewer")
    user = User.objects.create_user("bench", password=PASSWORD)
    Membership.objects.create(user=user, project=project, role="annotator")
    task = make_xray_task(project).task
    base, server = _serve()
    loads_ms: list[dict[str, float]] = []
    saves_ms: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(f"{base}/login/")
            page.get_by_label("User name").fill("bench")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/queue/")
            for _ in range(loads):
                page.goto(f"{base}/queue/")  # as a user does: from the queue to the task (not from a viewer page)
                page.goto(f"{base}/tasks/{task.pk}/")
                page.wait_for_function("['ready', 'error'].includes(document.querySelector('#annotate')?.dataset.pageState)",
                                       timeout=60_000)
                timings = page.evaluate("""async () => {
                  window.__p = await window.pleuraPage;
                  const nav = performance.getEntriesByType("navigation")[0];
                  return {...window.__p.timings, html: nav.responseEnd, dom: nav.domContentLoadedEventEnd};
                }""")
                loads_ms.append({"image_ms": timings["imageShown"], "mask_ms": timings["maskShown"],
                                 "html_ms": timings["html"], "scripts_ms": timings["dom"]})
            for _ in range(saves):
                saves_ms.append(page.evaluate("""async () => {
                  const p = window.__p, v = p.mounted.viewer, api = new window.Pleura.PleuraApi();
                  const t = performance.now();
                  await api.saveDraft(p.taskId, v.getLabelmap(), {parentRevision: p.parentRevision});
                  return performance.now() - t;
                }"""))
            browser.close()
    finally:
        server.shutdown()
    warm = loads_ms[1:] or loads_ms
    result = {
        "benchmark": "viewer",
        "task": {"modality": "DX", "shape": [1, 256, 256]},
        "targets_ms": TARGETS_MS,
        "cold": {k: round(v, 1) for k, v in loads_ms[0].items()},
        "image_ms": _summary([r["image_ms"] for r in warm]),
        "mask_ms": _summary([r["mask_ms"] for r in warm]),
        "save_ms": _summary(saves_ms),
        "breakdown_ms": {"html_received": _summary([r["html_ms"] for r in warm]),
                         "bundle_evaluated": _summary([r["scripts_ms"] for r in warm])},
        "meets_targets": {
            "image_ms": statistics.median(r["image_ms"] for r in warm) <= TARGETS_MS["image_ms"],
            "mask_ms": statistics.median(r["mask_ms"] for r in warm) <= TARGETS_MS["mask_ms"],
            "save_ms": statistics.median(saves_ms) <= TARGETS_MS["save_ms"],
        },
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "database": "sqlite (throw-away)", "server": "threaded WSGI, DEBUG off",
                        "browser": "headless Chromium, software WebGL, 1280x800",
                        "load_average": list(os.getloadavg())},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "viewer.json")
    parser.add_argument("--loads", type=int, default=6, help="page loads (the first is the cold one)")
    parser.add_argument("--saves", type=int, default=10, help="draft saves")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not (REPO / "frontend" / "dist" / ".vite" / "manifest.json").is_file():
        print("frontend/dist is not built: run `make frontend` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pleura-bench-viewer-") as tmp:
        _setup_django(Path(tmp))
        result = run(max(args.loads, 1), max(args.saves, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cold", "image_ms", "mask_ms", "save_ms", "meets_targets")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
