"""Dashboard and review-page benchmark (issue 20): a project seeded with 100,000 mask revisions by 50 annotators.

Measures
- the dashboard API (``/api/quality/dashboard/<project>/``, every figure) in-process through Django's
  test client: p50/p95 over repeated requests, unfiltered and with each filter (target p95 ≤ 300 ms),
  both *computed* (cache cleared before each request: every figure's queries run) and *cached* (data
  unchanged since the last request: one version query and a cache read);
- the dashboard page in headless Chromium: navigation start → every chart drawn (target ≤ 1.5 s);
- the review page of an X-ray: navigation start → image, final mask and difference shown (target ≤ 1 s).

Seeding writes rows in bulk (no label-map files: the dashboard reads only the database): 50,000 X-ray
targets with a model proposal (7 QC flags each) and an annotator's closing revision with its edit
measure, spread over 90 days; 90 % of them reviewed. The review-page target is a real ingested X-ray
with a stored proposal and a submitted edit. Database: PostgreSQL ``pleura_bench_dashboard`` (dropped
and recreated), or SQLite when PostgreSQL is not reachable.

Usage: ``python bench/bench_dashboard.py --out bench/results/dashboard.json [--targets 50000] [--requests 20]``
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
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from bench_proposals import _fresh_postgres, _reachable  # noqa: E402
from bench_viewer import _serve  # noqa: E402

TARGETS_MS = {"dashboard_api_p95_ms": 300.0, "dashboard_page_ms": 1500.0, "review_page_ms": 1000.0}
ANNOTATORS = 50
DAYS = 90
logger = logging.getLogger("bench.dashboard")


def _setup(data_dir: Path, database_url: str, reuse: bool) -> str:
    os.environ["PLEURA_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop here
    os.environ["PLEURA_LOG_LEVEL"] = "WARNING"
    database = "sqlite (throw-away)"
    os.environ.pop("DATABASE_URL", None)
    if _reachable(database_url, 5432) and (reuse or _fresh_postgres(database_url)):
        os.environ["DATABASE_URL"] = database_url
        database = "postgresql (throw-away)"
    for path in (REPO / "backend", REPO / "tests" / "e2e"):
        sys.path.insert(0, str(path))
    import django
    from django.core.management import call_command

    django.setup()
    from config.celery import app as celery_app

    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = True
    call_command("migrate", verbosity=0, interactive=False)
    return database


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1), "p95": round(_percentile(values, 0.95), 1),
            "max": round(max(values), 1), "n": len(values)}


def seed(project: Any, targets: int) -> dict[str, Any]:
    """Bulk rows: ``targets`` X-ray targets, each a proposal + a closing revision (2 revisions per target)."""
    import datetime as dt
    import random

    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import Membership, User
    from annotation.models import (AnnotationTask, DecisionKind, EditMeasure, MaskRevision, ReviewDecision,
                                   TaskAction, TaskStatus)
    from imaging.models import Instance, Patient, Series, Study
    from modeling.models import ModelVersion
    from quality.models import QCFlag, QCSummary

    rng = random.Random(20)
    started = time.perf_counter()
    users = User.objects.bulk_create([User(username=f"annotator{i:02d}") for i in range(ANNOTATORS)])
    Membership.objects.bulk_create([Membership(user=u, project=project, role="annotator") for u in users])
    reviewer = User.objects.create_user("bench-reviewer")
    Membership.objects.create(user=reviewer, project=project, role="reviewer")
    models = [ModelVersion.objects.create(name=f"cxr-bench-{i}", modality="cxr", weights_file="x", sha256=str(i) * 64)
              for i in range(3)]
    patient = Patient.objects.create(project=project, pseudonym="bench")
    study = Study.objects.create(project=project, patient=patient, study_instance_uid="9.9")
    per_series = 500
    series = Series.objects.bulk_create([Series(project=project, study=study, series_instance_uid=f"9.9.{s}", modality="DX",
                                                rows=256, columns=256, num_instances=per_series)
                                         for s in range((targets + per_series - 1) // per_series)])
    instances = Instance.objects.bulk_create([
        Instance(project=project, series=series[i // per_series], sop_instance_uid=f"9.9.{i // per_series}.{i}",
                 sop_class_uid="1.2.840.10008.5.1.4.1.1.7", file="none", file_size=1, sha256="0" * 64)
        for i in range(targets)], batch_size=5000)
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":  # seeding back-dates rows; the append-only trigger forbids updates
            connection.cursor().execute("ALTER TABLE annotation_maskrevision DISABLE TRIGGER annotation_maskrevision_append_only")
        common = {"project": project, "labelmap": "none.png", "labelmap_format": "png", "shape": [256, 256],
                  "checksum": "0" * 64, "right_size": 9000.0, "left_size": 8000.0, "size_unit": "mm2", "spacing": [0.5, 0.5]}
        proposals = MaskRevision.objects.bulk_create([
            MaskRevision(series_id=inst.series_id, instance=inst, target_key=f"instance:{inst.pk}", number=1, source="model",
                         model_version=models[i % 3], method="model", status="proposed", confidence=rng.random(), **common)
            for i, inst in enumerate(instances)], batch_size=5000)
        tasks = AnnotationTask.objects.bulk_create([
            AnnotationTask(project=project, series_id=inst.series_id, instance=inst, target_key=f"instance:{inst.pk}")
            for inst in instances], batch_size=5000)
        kinds = ["accept"] * 5 + ["submit"] * 4 + ["reject"]
        plan = [(rng.choice(kinds), users[i % ANNOTATORS], now - dt.timedelta(days=rng.randrange(DAYS),
                                                                              seconds=rng.randrange(86400)))
                for i in range(targets)]
        finals = MaskRevision.objects.bulk_create([
            MaskRevision(series_id=p.series_id, instance_id=p.instance_id, target_key=p.target_key, number=2, parent=p,
                         source="person", author=author, method={"accept": "accepted", "submit": "manual"}.get(kind, "rejected"),
                         status={"accept": "accepted", "submit": "submitted"}.get(kind, "rejected"), **common)
            for p, (kind, author, _) in zip(proposals, plan)], batch_size=5000)
        TaskAction.objects.bulk_create([
            TaskAction(task=t, revision=r, kind=kind, author=author, reason="unreadable" if kind == "reject" else "",
                       time_spent_s=rng.uniform(5, 900)) for t, r, (kind, author, _) in zip(tasks, finals, plan)],
            batch_size=5000)
        EditMeasure.objects.bulk_create([
            EditMeasure(revision=r, proposal=p, added=0 if kind == "accept" else rng.randrange(2000), removed=rng.randrange(50),
                        relabelled=0, changed_fraction=rng.random() * 0.03, dice_right=1 - rng.random() * 0.05,
                        dice_left=1 - rng.random() * 0.05, dice=1 - rng.random() * 0.05, hd95_right=rng.random() * 20,
                        hd95_left=rng.random() * 20, hd95=rng.random() * 20, hd95_unit="mm")
            for p, r, (kind, _, _) in zip(proposals, finals, plan)], batch_size=5000)
        names = ["components", "lung_size", "side_ratio", "border", "empty_side", "slice_discontinuity", "confidence"]
        QCFlag.objects.bulk_create([QCFlag(revision=p, name=n, value=1.0, flagged=rng.random() < 0.08)
                                    for p in proposals for n in names], batch_size=10000)
        QCSummary.objects.bulk_create([QCSummary(revision=p, modality="cxr", flagged_count=0, priority=0.0)
                                       for p in proposals], batch_size=5000)
        decided = []
        for t, r, (kind, author, _) in zip(tasks, finals, plan):
            if rng.random() < 0.9:
                decided.append(ReviewDecision(task=t, reviewed_revision=r, result_revision=r if kind != "reject" else None,
                                              kind=DecisionKind.CONFIRM_REJECT if kind == "reject" else rng.choice(
                                                  [DecisionKind.APPROVE] * 8 + [DecisionKind.RETURN]), reviewer=reviewer,
                                              annotator=author))
        ReviewDecision.objects.bulk_create(decided, batch_size=5000)
        # spread the dates: actions, revisions, decisions and tasks on the plan's day
        for model, rows in ((TaskAction, tasks), (AnnotationTask, tasks), (MaskRevision, finals)):
            key = "task_id" if model is TaskAction else "pk"
            for start in range(0, len(rows), 5000):
                chunk = list(zip(rows[start:start + 5000], plan[start:start + 5000]))
                for when in {p[2].date() for _, p in chunk}:
                    ids = [row.pk for row, p in chunk if p[2].date() == when]
                    stamp = dt.datetime.combine(when, dt.time(12), now.tzinfo)
                    model.objects.filter(**{f"{key}__in": ids}).update(created_at=stamp)
        AnnotationTask.objects.filter(project=project).update(status=TaskStatus.DONE)
    if connection.vendor == "postgresql":  # after the commit: deferred foreign-key checks block ALTER TABLE before
        connection.cursor().execute("ALTER TABLE annotation_maskrevision ENABLE TRIGGER annotation_maskrevision_append_only")
        connection.cursor().execute("ANALYZE")
    return {"targets": targets, "revisions": MaskRevision.objects.filter(project=project).count(),
            "annotators": ANNOTATORS, "review_decisions": len(decided), "qc_flags": targets * len(names),
            "seconds": round(time.perf_counter() - started, 1), "reviewer": reviewer, "annotator": users[0]}


def measure_api(project: Any, reviewer: Any, annotator: Any, requests: int) -> dict[str, Any]:
    import datetime as dt

    from django.test import Client
    from django.utils import timezone

    from django.core.cache import cache

    client = Client(HTTP_HOST="127.0.0.1")  # a host the settings allow
    client.force_login(reviewer)
    since = (timezone.localdate() - dt.timedelta(days=30)).isoformat()
    variants = {"all": {}, "last_30_days": {"from": since}, "one_annotator": {"annotator": str(annotator.pk)},
                "modality_cxr": {"modality": "cxr"}}
    results: dict[str, Any] = {"computed": {}, "cached": {}}
    for name, params in variants.items():
        client.get(f"/api/quality/dashboard/{project.pk}/", params)  # warm connections and the query planner
        for mode in ("computed", "cached"):
            times = []
            for _ in range(requests):
                if mode == "computed":
                    cache.clear()  # every figure computed by its queries
                started = time.perf_counter()
                response = client.get(f"/api/quality/dashboard/{project.pk}/", params)
                times.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"dashboard answered {response.status_code}: {response.content[:200]!r}")
            results[mode][name] = _summary(times)
    return results


def measure_pages(project: Any, reviewer: Any, loads: int) -> dict[str, Any]:
    from django.conf import settings
    from django.test import Client
    from playwright.sync_api import sync_playwright

    from accounts.models import Membership
    from annotation import workflow
    from annotator_support import make_xray_task
    from viewer_support import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

    xt = make_xray_task(project, name=f"bench-chest-{time.time_ns()}.png")  # a new image on every run
    labels = xt.labels[None].copy()
    labels[0, 220:232, 100:160] = 2
    annotator = Membership.objects.filter(project=project, role="annotator").first().user
    workflow.submit(xt.task.pk, annotator, workflow.latest_revision(xt.task).pk,
                    workflow.MaskUpload(shape=labels.shape, data=labels.tobytes(), time_spent_s=30))
    client = Client()
    client.force_login(reviewer)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    base, server = _serve()
    dashboard_ms: list[float] = []
    review_ms: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            context = browser.new_context(viewport=VIEWPORT)
            context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
            page = context.new_page()
            for _ in range(loads):
                page.goto(f"{base}/projects/{project.pk}/dashboard/")
                page.wait_for_function("['ready', 'error'].includes(document.querySelector('#dashboard')?.dataset.state)",
                                       timeout=120_000)
                dashboard_ms.append(page.evaluate("async () => (await window.pleuraDashboard).shownAt"))
                page.goto(f"{base}/review/tasks/{xt.task.pk}/")
                page.wait_for_function("['ready', 'error'].includes(document.querySelector('#review')?.dataset.pageState)",
                                       timeout=120_000)
                review_ms.append(page.evaluate("async () => (await window.pleuraReview).timings.shown"))
            browser.close()
    finally:
        server.shutdown()
    warm = slice(1, None) if loads > 1 else slice(None)
    return {"dashboard_page_ms": {"cold": round(dashboard_ms[0], 1), **_summary(dashboard_ms[warm])},
            "review_page_ms": {"cold": round(review_ms[0], 1), **_summary(review_ms[warm])}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dashboard.json")
    parser.add_argument("--targets", type=int, default=50_000, help="X-ray targets (2 revisions each)")
    parser.add_argument("--requests", type=int, default=20, help="API requests per filter variant")
    parser.add_argument("--loads", type=int, default=4, help="page loads (the first is the cold one)")
    parser.add_argument("--no-browser", action="store_true", help="measure the API only")
    parser.add_argument("--reuse-seed", action="store_true",
                        help="keep the bench database of an earlier run when it holds the seeded project")
    parser.add_argument("--database-url", default=os.environ.get("PLEURA_BENCH_DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/pleura_bench_dashboard"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="pleura-bench-dashboard-") as tmp:
        database = _setup(Path(tmp), args.database_url, args.reuse_seed)
        from accounts.models import User
        from annotation.models import MaskRevision
        from imaging.models import Project

        project = Project.objects.filter(name="bench-dashboard").first() if args.reuse_seed else None
        if project is None:
            project = Project.objects.create(name="bench-dashboard")
            seeded = seed(project, args.targets)
            reviewer, annotator = seeded.pop("reviewer"), seeded.pop("annotator")
        else:
            reviewer, annotator = User.objects.get(username="bench-reviewer"), User.objects.get(username="annotator00")
            seeded = {"targets": project.annotation_tasks.count(), "annotators": ANNOTATORS, "reused": True,
                      "revisions": MaskRevision.objects.filter(project=project).count()}
        api = measure_api(project, reviewer, annotator, args.requests)
        pages = {} if args.no_browser else measure_pages(project, reviewer, max(args.loads, 1))
    worst_p95 = max(v["p95"] for v in api["cached"].values())
    result = {
        "benchmark": "dashboard", "seeded": seeded, "targets_ms": TARGETS_MS, "dashboard_api_ms": api, **pages,
        "meets_targets": {
            "dashboard_api_p95_ms (cached, data unchanged)": worst_p95 <= TARGETS_MS["dashboard_api_p95_ms"],
            "dashboard_api_p95_ms (computed)": max(v["p95"] for v in api["computed"].values())
            <= TARGETS_MS["dashboard_api_p95_ms"],
            **({"dashboard_page_ms": pages["dashboard_page_ms"]["p50"] <= TARGETS_MS["dashboard_page_ms"],
                "review_page_ms": pages["review_page_ms"]["p50"] <= TARGETS_MS["review_page_ms"]} if pages else {}),
        },
        "environment": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                        "database": database, "api_client": "django.test.Client in-process (no HTTP)",
                        "browser": "headless Chromium, software WebGL, 1280x800" if pages else None,
                        "load_average": list(os.getloadavg())},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seeded", "dashboard_api_ms", "meets_targets")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
