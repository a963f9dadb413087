"""Proposal benchmarks: upload → proposal ready (one X-ray, one 300-slice CT) and X-ray throughput.

Runs the real path: ``imaging.services.ingest`` (de-identification, storage) → ``series_ingested``
→ proposal job → model → mask revision → QC. With ``--mode worker`` (default when Redis answers)
jobs go through Redis to ONE ``celery worker --pool solo`` subprocess; with ``--mode inprocess``
they run eagerly in this process (the embedded default). Everything lives in a throw-away data
folder and database (PostgreSQL ``pleura_bench``, or SQLite when PostgreSQL is not reachable).

Targets (issue 5, on 2 CPU cores): X-ray ≤ 2 s, 300-slice CT ≤ 20 s. Writes one JSON file.

Usage: ``python bench/bench_proposals.py --out bench/results/proposals.json [--xrays 100]``
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PLEURA_SHARED_DATA", REPO.parent / "shared" / "data"))
logger = logging.getLogger("bench.proposals")


def _reachable(url: str, port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or port), timeout=2):
            return True
    except OSError:
        return False


def _fresh_postgres(url: str) -> bool:
    """Drop and create the bench database; ``False`` when PostgreSQL is not usable."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        logger.warning("PostgreSQL not usable (%s); using SQLite", exc)
        return False
    return True


def configure(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    """Set the environment for Django (this process) and the worker; returns the worker env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "PLEURA_", "DATABASE_URL", "REDIS_URL"))}
    env["PLEURA_DATA_DIR"] = str(data_dir)
    if _reachable(args.database_url, 5432) and _fresh_postgres(args.database_url):
        env["DATABASE_URL"] = args.database_url
    if args.mode == "worker":
        env["REDIS_URL"] = args.redis_url
        env["PLEURA_CELERY_EAGER"] = "0"
        env["PLEURA_BROKER_VISIBILITY_TIMEOUT"] = "3600"
        env["PLEURA_DEFAULT_QUEUE"] = f"bench-{os.getpid()}"  # a queue of its own on a shared Redis
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "backend"), str(REPO)])
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["PLEURA_LOG_LEVEL"] = "WARNING"
    os.environ.clear()
    os.environ.update(env)
    sys.path[:0] = [str(REPO / "backend"), str(REPO)]
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", env["PLEURA_DEFAULT_QUEUE"],
           "-n", f"bench-{os.getpid()}@localhost", "--without-gossip", "--without-mingle", "--without-heartbeat",
           "--loglevel", "INFO"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def xray_bytes(index: int) -> tuple[str, bytes]:
    """A real chest X-ray PNG from ../shared/data when present, else a synthetic 1024×1024 one."""
    folder = SHARED / "cxr" / "montgomery" / "images"
    images = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if images:
        from PIL import Image

        path = images[index % len(images)]
        with Image.open(path) as image:  # a different file each time (ingest skips duplicates)
            array = np.array(image.convert("L"))
        array[0, 0] = index % 256
        array[0, 1] = index // 256
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return f"{path.stem}-{index}.png", buffer.getvalue()
    from PIL import Image

    rng = np.random.default_rng(index)
    array = (rng.random((1024, 1024)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return f"synthetic-{index}.png", buffer.getvalue()


def ct_nifti_bytes(depth: int) -> bytes:
    """A synthetic chest CT (``depth`` × 512 × 512, int16 HU) as .nii.gz bytes."""
    import gzip

    import nibabel as nib

    from ml.ct.api import synthetic_ct

    volume, spacing = synthetic_ct((depth, 512, 512))
    affine = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])  # LPS array axes → RAS world
    image = nib.Nifti1Image(np.transpose(volume.astype(np.int16), (2, 1, 0)), affine)
    return gzip.compress(image.to_bytes(), compresslevel=1)


def wait_done(job_filter: dict[str, Any], count: int, timeout_s: float) -> list[Any]:
    from modeling.models import JobStatus, ProposalJob

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = list(ProposalJob.objects.filter(**job_filter, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]))
        if len(jobs) >= count:
            return jobs
        time.sleep(0.01)
    raise TimeoutError(f"{count} proposal(s) not done within {timeout_s} s")


def upload_and_wait(project: Any, files: list[tuple[str, bytes]], timeout_s: float) -> dict[str, Any]:
    """Ingest one upload and wait for its proposals; seconds from upload start."""
    from imaging.services import ingest
    from imaging.sources import SourceFile

    start = time.perf_counter()
    result = ingest(project, [SourceFile(n, d) for n, d in files])
    ingested = time.perf_counter() - start
    series = [s.pk for s in result.series]
    jobs = wait_done({"series_id__in": series}, len(series), timeout_s)
    total = time.perf_counter() - start
    return {"total_s": round(total, 3), "ingest_s": round(ingested, 3), "status": [j.status for j in jobs],
            "method": [j.method for j in jobs], "job_s": [j.duration_s for j in jobs],
            "job_timings_s": [j.timings for j in jobs],
            "error": [j.error for j in jobs if j.error]}


def bench_xray(project: Any, repeats: int) -> dict[str, Any]:
    from modeling.services import NoChampionError, champion

    try:
        version = champion("cxr")
    except NoChampionError as exc:
        return {"status": "skipped", "reason": str(exc)}
    runs = [upload_and_wait(project, [xray_bytes(10_000 + i)], 120) for i in range(repeats + 1)]
    warm = [r["total_s"] for r in runs[1:]]
    return {"model": version.name, "target_s": 2.0, "cold_s": runs[0]["total_s"],
            "warm_median_s": round(statistics.median(warm), 3), "warm_max_s": max(warm),
            "ingest_median_s": round(statistics.median(r["ingest_s"] for r in runs[1:]), 3),
            "runs": runs}


def bench_ct(project: Any, depth: int) -> dict[str, Any]:
    from modeling.services import NoChampionError, champion

    try:
        version = champion("ct")
    except NoChampionError as exc:
        return {"status": "skipped", "reason": str(exc)}
    data = ct_nifti_bytes(depth)
    run = upload_and_wait(project, [("bench_ct.nii.gz", data)], 600)
    return {"model": version.name, "slices": depth, "target_s": 20.0, **run}


def bench_throughput(project: Any, count: int) -> dict[str, Any]:
    from imaging.services import ingest
    from imaging.sources import SourceFile
    from modeling.services import NoChampionError, champion

    try:
        champion("cxr")
    except NoChampionError as exc:
        return {"status": "skipped", "reason": str(exc)}
    files = [xray_bytes(i) for i in range(count)]
    start = time.perf_counter()
    series: list[int] = []
    for name, data in files:
        series += [s.pk for s in ingest(project, [SourceFile(name, data)]).series]
    uploaded = time.perf_counter() - start
    jobs = wait_done({"series_id__in": series}, len(series), 1800)
    elapsed = time.perf_counter() - start
    ok = sum(j.status == "succeeded" for j in jobs)
    return {"xrays": count, "succeeded": ok, "elapsed_s": round(elapsed, 2), "upload_s": round(uploaded, 2),
            "proposals_per_minute": round(60.0 * ok / elapsed, 1),
            "median_job_s": round(statistics.median(j.duration_s or 0.0 for j in jobs), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pleura-bench-") as tmp:
        env = configure(args, Path(tmp))
        import django

        django.setup()
        from django.core.management import call_command

        from imaging.models import Project

        call_command("migrate", verbosity=0)
        call_command("sync_model_registry", verbosity=0)
        if args.card:
            from ml import ModelCard
            from modeling.services import promote, sync_registry

            for version in sync_registry([ModelCard.from_file(path) for path in args.card]):
                promote(version)
        worker = start_worker(env, Path(tmp) / "worker.log") if args.mode == "worker" else None
        try:
            project = Project.objects.create(name="bench")
            sections: dict[str, Callable[[], dict[str, Any]]] = {
                "xray_upload_to_proposal": lambda: bench_xray(project, args.repeats),
                "ct_upload_to_proposal": lambda: bench_ct(project, args.ct_slices),
                "xray_throughput_one_worker": lambda: bench_throughput(project, args.xrays),
            }
            results: dict[str, Any] = {}
            for name, section in sections.items():
                if args.only and name not in args.only:
                    continue
                logger.info("== %s", name)
                results[name] = section()
                logger.info("%s", json.dumps({k: v for k, v in results[name].items() if k != "runs"}))
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
    return {"benchmark": "proposals", "mode": args.mode, "database": "postgresql" if "DATABASE_URL" in env else "sqlite",
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "shared_data": SHARED.is_dir(), **results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "proposals.json")
    parser.add_argument("--mode", choices=["worker", "inprocess"], default=None,
                        help="default: worker when Redis answers, else inprocess")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/pleura_bench")
    parser.add_argument("--xrays", type=int, default=100, help="X-rays for the throughput run")
    parser.add_argument("--repeats", type=int, default=5, help="warm single X-ray runs")
    parser.add_argument("--ct-slices", type=int, default=300)
    parser.add_argument("--only", nargs="*", help="sections to run")
    parser.add_argument("--card", type=Path, nargs="*", help="extra model cards to benchmark as champions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.mode is None:
        args.mode = "worker" if _reachable(args.redis_url, 6379) else "inprocess"
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "runs"} if isinstance(v, dict) else v)
                      for k, v in report.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
