"""Load benchmark: N concurrent annotators against gunicorn on PostgreSQL, as production runs it.

What it does:

1. Seeds (once; reused while the seed parameters stay the same) a project in a dedicated
   PostgreSQL database (``--database-url``, default ``pleura_bench_load``; created when missing):
   X-ray tasks (16-bit DX DICOM, ``--xray-size``²) and CT tasks (``--ct-slices`` × 512² CT DICOM),
   ingested through the real ingest, each with a stored model proposal; annotator users, each
   assigned their own tasks (so no two simulated people fight over a lease), and a pool of
   unassigned tasks every queue lists.
2. Starts gunicorn ``config.wsgi:application --chdir backend`` from the repository root (so a
   ``gunicorn.conf.py`` there applies), with the worker model given by
   ``--workers/--worker-class/--threads`` on top, ``DEBUG=0`` and ``DATABASE_CONN_MAX_AGE``.
3. For each client count (``--clients``, default 10 30 50) runs that many simulated annotators for
   ``--duration`` seconds. Each one does what the task page's JavaScript does (frontend/src
   ``annotatePage.ts``, ``api.ts``, ``autosave.ts``): open the queue page, the task page, claim the
   task, fetch the revision mask (and its draft when one fits), fetch every instance by WADO-URI
   (through a browser-like HTTP cache: fresh entries are not asked again, stale ones are
   revalidated with ``If-None-Match``), then autosave the draft every few seconds (a painted
   stroke: the whole mask for an X-ray, the changed slices for CT, gzip as the browser sends it),
   renew the lease once, release the task and go back to the queue.
4. Records p50/p95/p99, mean and error counts per call type, requests per second, the machine's load
   average (before, during, after) and the CPU seconds used by the server and by this client, and
   writes them as JSON (``--out``).

Everything goes to 127.0.0.1. Usage::

    python bench/bench_load.py --out bench/results/load.json            # the recommended server
    python bench/bench_load.py --worker-class sync --workers 3 --threads 1 --conn-max-age 0 \\
        --backend-dir /tmp/old/backend --out bench/results/load_before.json  # an older checkout, as it ran
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import io
import json
import logging
import os
import platform
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pleura_bench_load"
TARGET_P95_MS = 250.0
HOST = "127.0.0.1"
START_TIMEOUT_S = 180  # a production gunicorn.conf.py may collect static files before the workers start
logger = logging.getLogger("bench.load")


# ------------------------------------------------------------------------------ set-up


@dataclass(frozen=True)
class SeedSpec:
    """What the seeded project holds; its name encodes these numbers so a changed spec seeds anew."""

    annotators: int
    xray_per_annotator: int
    ct_every: int
    unassigned_xray: int
    xray_size: int
    ct_slices: int
    ct_size: int

    @property
    def project_name(self) -> str:
        return (f"bench-load-a{self.annotators}-x{self.xray_per_annotator}-c{self.ct_every}-u{self.unassigned_xray}"
                f"-xs{self.xray_size}-cs{self.ct_slices}x{self.ct_size}")


def ensure_database(url: str) -> None:
    """Create the benchmark database when it does not exist (never the tests' database)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"database name must be letters, digits and _: {name!r}")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
            logger.info("created database %s", name)


def server_env(database_url: str, data_dir: Path, conn_max_age: int) -> dict[str, str]:
    """Environment of the seeding process and of gunicorn: production mode on local services."""
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": str(conn_max_age),
        "PLEURA_DATA_DIR": str(data_dir),
        "DEBUG": "0",
        "SECRET_KEY": env.get("BENCH_SECRET_KEY") or secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": HOST,
        "SESSION_COOKIE_SECURE": "0",  # plain HTTP on 127.0.0.1
        "CSRF_COOKIE_SECURE": "0",
        "PLEURA_LOG_LEVEL": env.get("PLEURA_LOG_LEVEL", "WARNING"),
    })
    return env


def setup_django(env: dict[str, str]) -> None:
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "PLEURA_DATA_DIR", "DEBUG", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "DATABASE_CONN_MAX_AGE", "PLEURA_LOG_LEVEL")})
    os.environ.pop("REDIS_URL", None)  # seeding runs Celery tasks (series statistics) in-process
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO / "backend"))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def _dicom(*, modality: str, rows: int, columns: int, pixels: np.ndarray, study_uid: str, series_uid: str,
           z: float = 0.0, number: int = 1, patient: str = "BENCH") -> bytes:
    """A Part-10 file, explicit VR little endian, 16-bit MONOCHROME2 ``(rows, columns)`` pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    sop_class = CTImageStorage if modality == "CT" else DigitalXRayImageStorageForPresentation
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.PatientName, ds.PatientID = modality, f"{patient}^LOAD", patient
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", 1, number
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.7, 0.7] if modality == "CT" else [0.15, 0.15]
    if modality == "CT":
        ds.FrameOfReferenceUID = study_uid + ".1"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.SliceThickness, ds.SliceLocation = 5.0, z
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = pixels.astype("<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """A chest-like ``(size, size)`` 12-bit image: body ellipse, two darker lungs, noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 200.0)
    img[((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.42) ** 2 < 1] = 1100.0
    for cx in (0.32, 0.68):
        img[((xx - cx) / 0.14) ** 2 + ((yy - 0.48) / 0.28) ** 2 < 1] = 350.0
    return np.clip(img + rng.normal(0, 25, img.shape), 0, 4095).astype(np.uint16)


def _lungs(shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8 labels 1 (right lung, image left) and 2 matching :func:`_phantom`."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros((h, w), np.uint8)
    for value, cx in ((1, 0.32), (2, 0.68)):
        labels[((xx / w - cx) / 0.14) ** 2 + ((yy / h - 0.48) / 0.28) ** 2 < 1] = value
    return labels


def seed(spec: SeedSpec) -> dict[str, Any]:
    """Create (or find) the seeded project; returns ids and what each simulated annotator needs."""
    from django.db import transaction
    from pydicom.uid import generate_uid

    from accounts.models import Membership, User
    from annotation import services
    from annotation.models import AnnotationTask, RevisionSource, RevisionStatus
    from imaging.models import Project, Series
    from imaging.services import ingest
    from imaging.signals import series_ingested
    from imaging.sources import SourceFile

    # the simulated people work in this project only (an earlier seed with other numbers may exist)
    Membership.objects.filter(user__username__startswith="load-annotator-").exclude(project__name=spec.project_name).delete()
    project = Project.objects.filter(name=spec.project_name).first()
    if project is not None and AnnotationTask.objects.filter(project=project).count() == _task_count(spec):
        logger.info("reusing seeded project %s", project.name)
        for i in range(spec.annotators):  # the memberships an earlier seed with other numbers removed
            Membership.objects.get_or_create(user=User.objects.get(username=f"load-annotator-{i:03d}"), project=project,
                                             defaults={"role": "annotator"})
        return _seed_summary(project, spec)
    if project is not None:  # an interrupted seed: start again
        project.delete()
    series_ingested.disconnect(dispatch_uid="modeling.queue_proposals_on_ingest")  # no model runs: proposals are stored below
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    project = Project.objects.create(name=spec.project_name, description="load benchmark (bench/bench_load.py)")
    users = []
    for i in range(spec.annotators):
        user, _ = User.objects.get_or_create(username=f"load-annotator-{i:03d}")
        user.set_unusable_password()
        user.save()
        Membership.objects.create(user=user, project=project, role="annotator")
        users.append(user)
    xray_base = _phantom(spec.xray_size, rng)
    xray_labels = _lungs((spec.xray_size, spec.xray_size))
    ct_base = _phantom(spec.ct_size, rng)
    ct_labels = np.repeat(_lungs((spec.ct_size, spec.ct_size))[None], spec.ct_slices, axis=0)
    ct_labels[: spec.ct_slices // 8] = 0  # apex and base without lung
    ct_labels[-spec.ct_slices // 8:] = 0

    def xray_task(n: int, assignee: Any) -> None:
        pixels = xray_base.copy()
        pixels[0, :16] = rng.integers(0, 4095, 16)
        study = generate_uid()
        data = _dicom(modality="DX", rows=spec.xray_size, columns=spec.xray_size, pixels=pixels, study_uid=study,
                      series_uid=study + ".1", patient=f"X{n:05d}")
        series = Series.objects.get(pk=ingest(project, [SourceFile(f"x{n}.dcm", data)], modality="DX").series[0].pk)
        revision = services.create_revision(
            series=series, instance=series.instances.get(), labels=xray_labels, source=RevisionSource.MODEL,
            status=RevisionStatus.PROPOSED, spacing=(0.15, 0.15), method="model", confidence=float(rng.uniform(0.3, 0.99)))
        AnnotationTask.objects.filter(target_key=revision.target_key).update(assignee=assignee)

    def ct_task(n: int, assignee: Any) -> None:
        study = generate_uid()
        files = []
        for z in range(spec.ct_slices):
            pixels = ct_base.copy()
            pixels[0, :16] = rng.integers(0, 4095, 16)
            files.append(SourceFile(f"ct{n}-{z}.dcm", _dicom(
                modality="CT", rows=spec.ct_size, columns=spec.ct_size, pixels=pixels, study_uid=study,
                series_uid=study + ".1", z=5.0 * z, number=z + 1, patient=f"C{n:05d}")))
        series = Series.objects.get(pk=ingest(project, files, modality="CT").series[0].pk)
        from modeling.inference import slice_order

        revision = services.create_revision(
            series=series, instance=None, labels=ct_labels, source=RevisionSource.MODEL,
            status=RevisionStatus.PROPOSED, spacing=(5.0, 0.7, 0.7), method="model",
            geometry={"instance_ids": slice_order(series)}, confidence=float(rng.uniform(0.3, 0.99)))
        AnnotationTask.objects.filter(target_key=revision.target_key).update(assignee=assignee)

    n = 0
    for i, user in enumerate(users):
        for _ in range(spec.xray_per_annotator):
            with transaction.atomic():
                xray_task(n, user)
            n += 1
        if spec.ct_every and i % spec.ct_every == 0:
            with transaction.atomic():
                ct_task(n, user)
            n += 1
        logger.info("seeded annotator %d/%d (%.0f s)", i + 1, len(users), time.perf_counter() - started)
    for _ in range(spec.unassigned_xray):
        with transaction.atomic():
            xray_task(n, None)
        n += 1
    logger.info("seeded %d tasks in %.0f s", n, time.perf_counter() - started)
    return _seed_summary(project, spec)


def _task_count(spec: SeedSpec) -> int:
    ct = len(range(0, spec.annotators, spec.ct_every)) if spec.ct_every else 0
    return spec.annotators * spec.xray_per_annotator + ct + spec.unassigned_xray


def _seed_summary(project: Any, spec: SeedSpec) -> dict[str, Any]:
    from annotation.models import AnnotationTask

    tasks = AnnotationTask.objects.filter(project=project)
    return {"project": project.name, "tasks": tasks.count(),
            "xray_tasks": tasks.filter(instance__isnull=False).count(),
            "ct_tasks": tasks.filter(instance__isnull=True).count(), "spec": spec.__dict__}


def sessions(count: int) -> list[str]:
    """Fresh session ids of the first ``count`` annotators (as after logging in)."""
    from django.test import Client

    from accounts.models import User

    ids = []
    for i in range(count):
        client = Client()
        client.force_login(User.objects.get(username=f"load-annotator-{i:03d}"))
        ids.append(client.cookies["sessionid"].value)
    return ids


def reset_claims_and_drafts(project_name: str) -> None:
    """Between runs: no leases left over, no drafts (each run starts from the model proposals)."""
    from annotation.models import AnnotationTask, Draft

    tasks = AnnotationTask.objects.filter(project__name=project_name)
    tasks.update(claimed_by=None, claimed_at=None, lease_expires_at=None, status="open")
    Draft.objects.filter(task__in=tasks).delete()


# ------------------------------------------------------------------------------ server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def gunicorn_command(port: int, workers: int, worker_class: str, threads: int, backend: Path) -> list[str]:
    """The production command with the worker model under test (``--chdir``: no installed project needed)."""
    cmd = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application", "--chdir", str(backend),
           "--bind", f"{HOST}:{port}", "--workers", str(workers), "--worker-class", worker_class, "--timeout", "300"]
    if worker_class == "gthread":
        cmd += ["--threads", str(threads)]
    return cmd


def start_server(cmd: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    # from the repository root, as production starts it: a ./gunicorn.conf.py there applies, the
    # command line's worker model on top of it
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}; see {log}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/login/")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"gunicorn did not answer on {HOST}:{port} within {START_TIMEOUT_S} s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _process_tree_cpu_s(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its live children (gunicorn master + workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: parent pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# ------------------------------------------------------------------------------ simulated annotators


@dataclass
class Stats:
    """Latencies (ms) and errors per call type, shared by the client threads."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)
    record_from: float = 0.0

    def add(self, kind: str, started: float, ms: float, error: str | None) -> None:
        if started < self.record_from:
            return
        with self.lock:
            self.latencies[kind].append(ms)
            if error is not None:
                self.errors[kind].append(error)


class Browser:
    """One annotator's browser: a keep-alive connection, cookies, and an HTTP cache for WADO."""

    def __init__(self, port: int, session_id: str, stats: Stats) -> None:
        self.port, self.stats = port, stats
        self.cookies = {"sessionid": session_id}
        self.conn = http.client.HTTPConnection(HOST, port, timeout=120)
        self.cache: dict[str, tuple[float, str | None]] = {}  # url -> (fresh until, etag)

    def request(self, kind: str, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> tuple[int, dict[str, str], bytes]:
        """Send one request and record it under ``kind``; a status outside ``ok`` counts as an error."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **(headers or {})}
        if "csrftoken" in self.cookies and method != "GET":
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        started = time.monotonic()
        status, answer, data, error = 0, {}, b"", None
        for attempt in range(2):  # a keep-alive connection the server closed: reconnect once, as browsers do
            try:
                self.conn.request(method, url, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                status, answer = response.status, {k.lower(): v for k, v in response.getheaders()}
                if answer.get("connection", "").lower() == "close":
                    self.conn.close()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.conn.close()
                if attempt:
                    error = f"{type(exc).__name__}: {exc}"
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                error = f"{type(exc).__name__}: {exc}"
                break
        ms = (time.monotonic() - started) * 1000
        if error is None and status not in ok:
            error = f"HTTP {status} {data[:200]!r}"
        self.stats.add(kind, started, ms, error)
        for cookie in [v for k, v in answer.items() if k == "set-cookie"]:
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return status, answer, data

    def cached_get(self, kind: str, url: str, headers: dict[str, str]) -> None:
        """GET as the browser's HTTP cache would: not at all while fresh, else conditionally when tagged."""
        now = time.monotonic()
        fresh_until, etag = self.cache.get(url, (0.0, None))
        if now < fresh_until:
            return
        status, answer, _ = self.request(kind, "GET", url, headers={**headers, **({"If-None-Match": etag} if etag else {})},
                                         ok=(200, 304))
        control = answer.get("cache-control", "")
        match = re.search(r"max-age=(\d+)", control)
        if status in (200, 304) and "no-store" not in control and (match or "etag" in answer):
            self.cache[url] = (now + int(match.group(1)) if match else now, answer.get("etag", etag))

    def forget(self) -> None:
        """Empty the HTTP cache (the next task is one this person has not opened before)."""
        self.cache.clear()


@dataclass
class Behaviour:
    """Pacing of a simulated annotator (seconds)."""

    saves_per_task: int
    save_interval: tuple[float, float]
    between_tasks: tuple[float, float]
    stroke_slices: int
    #: keep the browser cache between task visits (a person reopening tasks); off: every visit is a first one
    revisit_cache: bool = False


def _stroke(labels: np.ndarray, rng: random.Random, slices: list[int]) -> np.ndarray:
    """Paint a disk of lung label 1 into ``slices`` of a ``(D, H, W)`` mask (a brush stroke)."""
    out = labels.copy()
    d, h, w = labels.shape
    cy, cx, r = rng.randrange(h // 4, 3 * h // 4), rng.randrange(w // 8, w // 2), max(4, w // 30)
    yy, xx = np.ogrid[0:h, 0:w]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    for z in slices:
        out[z][disk] = 1
    return out


class Annotator(threading.Thread):
    """Loops over queue → task page → claim → masks → WADO → autosaves (+ one lease renewal) → release."""

    def __init__(self, index: int, port: int, session_id: str, stats: Stats, stop: threading.Event,
                 behaviour: Behaviour, edits: dict[int, list[Edit]]) -> None:
        super().__init__(daemon=True, name=f"annotator-{index}")
        self.browser = Browser(port, session_id, stats)
        self.stop, self.behaviour, self.edits = stop, behaviour, edits
        self.rng = random.Random(index)
        self.last_task: int | None = None
        self.failure: str | None = None

    def run(self) -> None:
        try:
            self.stop.wait(self.rng.uniform(0, 3))  # people do not all start in the same second
            while not self.stop.is_set():
                self.work_on_one_task()
                self.stop.wait(self.rng.uniform(*self.behaviour.between_tasks))
        except (ValueError, KeyError, json.JSONDecodeError) as exc:  # an answer that cannot be used: stop this client
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.error("%s stopped: %s", self.name, self.failure)

    def pick(self, queue_html: bytes) -> int | None:
        """The next of my assigned tasks after the one I did last (rows list assigned then pooled tasks)."""
        ids = [int(m) for m in re.findall(rb'<tr data-task="(\d+)"', queue_html)]
        mine = [t for t in ids if t in self.edits]
        if not mine:
            return None
        if self.last_task in mine:
            return mine[(mine.index(self.last_task) + 1) % len(mine)]
        return mine[0]

    def work_on_one_task(self) -> None:
        b = self.browser
        status, _, page = b.request("queue_page", "GET", "/queue/")
        if status != 200:
            return
        task_id = self.pick(page)
        if task_id is None:  # the seed gives everyone tasks: an empty queue is a failure, not a pause
            self.browser.stats.add("queue_page", time.monotonic(), 0.0, "none of my tasks is in my queue")
            self.stop.wait(1.0)
            return
        self.last_task = task_id
        if not self.behaviour.revisit_cache:
            b.forget()
        status, _, html = b.request("task_page", "GET", f"/tasks/{task_id}/")
        if status != 200:
            return
        status, _, body = b.request("claim", "POST", f"/api/annotation/tasks/{task_id}/claim",
                                    headers={"Accept": "application/json"})
        if status != 200:
            return
        task = json.loads(body)
        revision = task["revision"]["id"]
        b.cached_get("revision_mask", f"/api/annotation/revisions/{revision}/mask", {"Accept-Encoding": "gzip"})
        if task["draft"] and task["draft"]["parent_revision"] == revision:
            b.request("draft_read", "GET", f"/api/annotation/tasks/{task_id}/draft", headers={"Accept-Encoding": "gzip"})
        for instance in task["instances"]:
            if self.stop.is_set():
                return
            b.cached_get("wado", instance["url"], {"Accept": "application/dicom"})
        edits = self.edits.get(task_id)
        if not edits:  # a pooled task: look at it and go back (only assigned tasks are edited)
            b.request("release", "POST", f"/api/annotation/tasks/{task_id}/release", ok=(204,))
            return
        for n in range(self.behaviour.saves_per_task):
            if self.stop.wait(self.rng.uniform(*self.behaviour.save_interval)):
                return
            self.save(task_id, revision, tuple(task["shape"]), edits[n % len(edits)])
            if n == self.behaviour.saves_per_task // 2:  # the page's heartbeat (every lease/3 s), compressed
                b.request("lease_renewal", "POST", f"/api/annotation/tasks/{task_id}/claim",
                          headers={"Accept": "application/json"})
        b.request("release", "POST", f"/api/annotation/tasks/{task_id}/release", ok=(204,))

    def save(self, task_id: int, revision: int, shape: tuple[int, ...], edit: "Edit") -> None:
        """The autosave PUT: gzip of the whole mask (X-ray) or of the stroked slices (CT)."""
        headers = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip",
                   "X-Shape": ",".join(map(str, shape)), "X-Dtype": "uint8", "X-Parent-Revision": str(revision),
                   "Accept": "application/json"}
        if edit.slices is not None:
            headers["X-Slices"] = ",".join(map(str, edit.slices))
        self.browser.request("draft_save", "PUT", f"/api/annotation/tasks/{task_id}/draft", body=edit.body, headers=headers)


@dataclass(frozen=True)
class Edit:
    """A prepared autosave body: the slices it covers (``None``: the whole mask) and its gzip bytes."""

    slices: list[int] | None
    body: bytes


def prepared_edits(labels: np.ndarray, rng: random.Random, variants: int, stroke_slices: int) -> list[Edit]:
    """A few strokes on a ``(D, H, W)`` proposal, encoded as the browser sends them (made before the run,
    so that the client's compression does not take CPU from the server under test)."""
    depth = labels.shape[0]
    edits = []
    for _ in range(variants):
        if depth == 1:
            edited = _stroke(labels, rng, [0])
            edits.append(Edit(None, gzip.compress(edited.tobytes(), compresslevel=6)))
        else:
            first = rng.randrange(depth // 4, 3 * depth // 4)
            slices = list(range(first, min(depth, first + stroke_slices)))
            edited = _stroke(labels, rng, slices)
            edits.append(Edit(slices, gzip.compress(edited[slices].tobytes(), compresslevel=6)))
    return edits


def task_edits(project_name: str, count: int, stroke_slices: int, variants: int = 3) -> list[dict[int, list[Edit]]]:
    """Per annotator: prepared autosave bodies for each assigned task, made from its model proposal."""
    from annotation.models import AnnotationTask
    from annotation.workflow import latest_revision, revision_volume

    rng = random.Random(0)
    out: list[dict[int, list[Edit]]] = []
    for i in range(count):
        tasks = AnnotationTask.objects.filter(project__name=project_name, assignee__username=f"load-annotator-{i:03d}")
        out.append({task.pk: prepared_edits(revision_volume(latest_revision(task)), rng, variants, stroke_slices)
                    for task in tasks})
    return out


# ------------------------------------------------------------------------------ one level


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
    return {"n": len(ordered), "p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1), "p99_ms": round(q[98], 1),
            "mean_ms": round(statistics.fmean(ordered), 1), "max_ms": round(ordered[-1], 1)}


def run_level(clients: int, port: int, session_ids: list[str], edits: list[dict[int, list[Edit]]], duration: float,
              warmup: float, behaviour: Behaviour, server_pid: int) -> dict[str, Any]:
    """Run ``clients`` annotators for ``warmup + duration`` s; statistics cover the last ``duration`` s."""
    stats, stop = Stats(), threading.Event()
    threads = [Annotator(i, port, session_ids[i], stats, stop, behaviour, edits[i]) for i in range(clients)]
    load_before = os.getloadavg()
    loads: list[list[float]] = []
    for t in threads:
        t.start()
    time.sleep(warmup)
    stats.record_from = time.monotonic()
    cpu_server, cpu_client, wall = _process_tree_cpu_s(server_pid), time.process_time(), time.monotonic()
    while time.monotonic() - wall < duration:
        time.sleep(min(5.0, duration - (time.monotonic() - wall)))
        loads.append([round(x, 2) for x in os.getloadavg()])
    elapsed = time.monotonic() - wall
    cpu_server, cpu_client = _process_tree_cpu_s(server_pid) - cpu_server, time.process_time() - cpu_client
    stop.set()
    for t in threads:
        t.join(timeout=150)
    with stats.lock:
        per_call = {kind: {**_percentiles(values), "errors": len(stats.errors.get(kind, [])),
                           "error_examples": sorted(set(stats.errors.get(kind, [])))[:3]}
                    for kind, values in sorted(stats.latencies.items())}
    total = sum(v["n"] for v in per_call.values())
    errors = sum(v["errors"] for v in per_call.values())
    measured = {k: v for k, v in per_call.items() if k != "release"}
    return {
        "clients": clients,
        "duration_s": round(elapsed, 1),
        "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "errors": errors,
        "client_failures": [t.failure for t in threads if t.failure],
        "per_call": per_call,
        "worst_p95_ms": max((v.get("p95_ms", 0.0) for v in measured.values()), default=None),
        "meets_target": errors == 0 and all(v.get("p95_ms", 0.0) <= TARGET_P95_MS for v in measured.values()),
        "load_average": {"before": [round(x, 2) for x in load_before], "during": loads,
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "cpu_s": {"server": round(cpu_server, 1), "bench_client": round(cpu_client, 1),
                  "server_per_request_ms": round(1000 * cpu_server / total, 1) if total else None},
    }


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
                        help="a dedicated database (created when missing); not the tests' database")
    parser.add_argument("--data-dir", type=Path, default=REPO / "var" / "bench_load", help="stored files of the seeded project")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 30, 50])
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per client count")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds run before measuring, per client count")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    parser.add_argument("--conn-max-age", type=int, default=60, help="DATABASE_CONN_MAX_AGE of the server (s)")
    parser.add_argument("--annotators", type=int, default=50, help="seeded annotators (at least the largest --clients)")
    parser.add_argument("--xray-size", type=int, default=2048, help="X-ray rows = columns")
    parser.add_argument("--ct-slices", type=int, default=48)
    parser.add_argument("--ct-size", type=int, default=512)
    parser.add_argument("--xray-per-annotator", type=int, default=2)
    parser.add_argument("--ct-every", type=int, default=2, help="every n-th annotator also has a CT task (0: none)")
    parser.add_argument("--unassigned", type=int, default=50, help="X-ray tasks in the shared pool")
    parser.add_argument("--saves-per-task", type=int, default=4)
    parser.add_argument("--save-interval", type=float, nargs=2, default=[2.0, 4.0], help="seconds between autosaves")
    parser.add_argument("--between-tasks", type=float, nargs=2, default=[0.5, 1.5])
    parser.add_argument("--backend-dir", type=Path, default=REPO / "backend",
                        help="the Django project gunicorn serves (another checkout's backend/ measures that code)")
    parser.add_argument("--revisit-cache", action="store_true",
                        help="keep each browser's HTTP cache between task visits (default: every visit starts cold, "
                             "as when each task is new to its annotator)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not 1 <= min(args.clients) <= max(args.clients) <= 500:
        raise SystemExit("--clients must be between 1 and 500")

    if max(args.clients) > args.annotators:
        raise SystemExit(f"--clients {max(args.clients)} needs at least as many --annotators (got {args.annotators})")
    spec = SeedSpec(annotators=args.annotators, xray_per_annotator=args.xray_per_annotator,
                    ct_every=args.ct_every, unassigned_xray=args.unassigned, xray_size=args.xray_size,
                    ct_slices=args.ct_slices, ct_size=args.ct_size)
    ensure_database(args.database_url)
    env = server_env(args.database_url, args.data_dir.resolve(), args.conn_max_age)
    setup_django(env)
    logger.setLevel(logging.INFO)  # Django's LOGGING (PLEURA_LOG_LEVEL) applies to the root logger only
    seeded = seed(spec)
    reset_claims_and_drafts(spec.project_name)
    behaviour = Behaviour(args.saves_per_task, tuple(args.save_interval), tuple(args.between_tasks), stroke_slices=3,
                          revisit_cache=args.revisit_cache)
    session_ids = sessions(spec.annotators)
    edits = task_edits(spec.project_name, spec.annotators, behaviour.stroke_slices)
    from django.db import connections

    connections.close_all()

    port = _free_port()
    cmd = gunicorn_command(port, args.workers, args.worker_class, args.threads, args.backend_dir.resolve())
    args.data_dir.mkdir(parents=True, exist_ok=True)
    log = args.data_dir / "gunicorn.log"  # beside the seeded files (git-ignored), not among the results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(cmd, env, port, log)
    levels = []
    try:
        for clients in args.clients:
            logger.info("== %d clients for %.0f s (+%.0f s warm-up)", clients, args.duration, args.warmup)
            level = run_level(clients, port, session_ids, edits, args.duration, args.warmup, behaviour, server.pid)
            logger.info("%d clients: %d requests, %d errors, worst p95 %.0f ms, load %s", clients, level["requests"],
                        level["errors"], level["worst_p95_ms"] or 0, level["load_average"]["after"])
            for kind, row in level["per_call"].items():
                logger.info("   %-14s n=%-5d p50=%6.1f p95=%6.1f p99=%6.1f errors=%d", kind, row["n"], row["p50_ms"],
                            row["p95_ms"], row["p99_ms"], row["errors"])
            levels.append(level)
            reset_claims_and_drafts(spec.project_name)
            connections.close_all()
    finally:
        stop_server(server)
    result = {
        "benchmark": "load",
        "target": {"p95_ms_each_call_type": TARGET_P95_MS, "errors": 0, "clients": 30},
        "server": {"command": " ".join(["gunicorn", *cmd[1:]]).replace(str(REPO) + "/", ""),
                   "backend": str(args.backend_dir),
                   "config_file": "gunicorn.conf.py" if (REPO / "gunicorn.conf.py").is_file() else None,
                   "env": {"DEBUG": "0", "DATABASE_CONN_MAX_AGE": str(args.conn_max_age)},
                   "workers": args.workers, "worker_class": args.worker_class,
                   "threads": args.threads if args.worker_class == "gthread" else 1},
        "seed": seeded,
        "behaviour": {"saves_per_task": args.saves_per_task, "save_interval_s": args.save_interval,
                      "between_tasks_s": args.between_tasks, "ct_stroke_slices": behaviour.stroke_slices,
                      "browser_cache_kept_between_tasks": behaviour.revisit_cache},
        "levels": levels,
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                        "database": "PostgreSQL " + _pg_version(args.database_url)},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({lv["clients"]: {"worst_p95_ms": lv["worst_p95_ms"], "errors": lv["errors"],
                                      "meets_target": lv["meets_target"], "load": lv["load_average"]["after"]}
                      for lv in levels}, indent=2))
    return 0


def _pg_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())
