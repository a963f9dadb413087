"""Export benchmark: 1,000 X-ray cases in every format, a 300-slice CT as DICOM SEG and NIfTI.

Runs the real path of an export job (:func:`exports.services.run_export`: selection, archive in a
temporary file, saved through the storage API) in a forked child process per export, so that each
export's wall time and peak resident memory (``ru_maxrss`` of that child, which includes the
interpreter, Django and numpy it inherits) are its own. The data are ingested first through
``imaging.services.ingest`` (no model proposals: labels are stored as curated (approved) revisions).

X-rays: real 256×256 chest X-rays and their lung labels from ``../shared/data/cxr/covidqu`` scaled
to ``--size`` (default 1024×1024; labels nearest-neighbour), or synthetic ones when the data are
absent. CT: a synthetic 300×512×512 chest phantom (ingested as NIfTI → 300 DICOM slices).

Each row also has the child's CPU time (user + system, all threads) and the machine's 1-minute load
average when it ended: on a shared machine the wall time grows with the load, the CPU time barely.

Targets (issue 22): ≤ 60 s for the 1,000 X-rays in PNG, COCO and nnU-Net; ≤ 10 s and ≤ 1 GB for
the CT SEG. Writes one JSON file.

Usage: ``python bench/bench_export.py --out bench/results/export.json [--xrays 1000] [--size 1024]``
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PLEURA_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path[:0] = [str(REPO / "bench")]
from bench_proposals import _fresh_postgres, _reachable  # noqa: E402

logger = logging.getLogger("bench.export")
XRAY_FORMATS = ("png", "coco", "nnunet", "nifti", "monai", "seg")
TARGETS_S = {"png": 60.0, "coco": 60.0, "nnunet": 60.0}


def configure(database_url: str, data_dir: Path) -> str:
    """Environment for Django in this process (eager tasks, local storage); returns the database kind."""
    for key in [k for k in os.environ if k.startswith(("CELERY", "PLEURA_")) or k in ("DATABASE_URL", "REDIS_URL")]:
        del os.environ[key]
    os.environ["PLEURA_DATA_DIR"] = str(data_dir)
    os.environ["PLEURA_LOG_LEVEL"] = "WARNING"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    kind = "sqlite"
    if _reachable(database_url, 5432) and _fresh_postgres(database_url):
        os.environ["DATABASE_URL"], kind = database_url, "postgresql"
    sys.path[:0] = [str(REPO / "backend"), str(REPO)]
    return kind


def xray_pair(index: int, size: int, stems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """X-ray ``index`` of ``size``² and its labels: the real ones (cycled) when present, else synthetic."""
    from PIL import Image

    if stems:
        folder = SHARED / "cxr" / "covidqu"
        stem = stems[index % len(stems)]
        image = Image.open(folder / "images" / f"{stem}.png").convert("L").resize((size, size), Image.BILINEAR)
        labels = Image.open(folder / "labels" / f"{stem}.png").resize((size, size), Image.NEAREST)
        return np.array(image), np.minimum(np.array(labels), 2).astype(np.uint8)
    y, x = np.mgrid[0:size, 0:size]
    labels = np.zeros((size, size), np.uint8)
    for value, cx in ((1, 0.3), (2, 0.7)):
        labels[((x - cx * size) / (0.16 * size)) ** 2 + ((y - size / 2) / (0.3 * size)) ** 2 <= 1] = value
    noise = np.random.default_rng(index).integers(0, 30, (size, size))
    return (np.where(labels > 0, 60, 190) + noise).astype(np.uint8), labels


def ingest_xrays(project: Any, count: int, size: int) -> float:
    """Ingest ``count`` X-rays (each its own patient) with a curated (approved) label revision, 50 per upload; seconds."""
    from PIL import Image

    from annotation.services import create_revision
    from imaging.services import ingest
    from imaging.sources import SourceFile

    started = time.perf_counter()
    folder = SHARED / "cxr" / "covidqu" / "images"
    stems = sorted(p.stem for p in folder.glob("*.png"))[:count] if folder.is_dir() else []
    for start in range(0, count, 50):
        files, labels = [], []
        for index in range(start, min(count, start + 50)):
            image, label = xray_pair(index, size, stems)
            image[0, :3] = (index % 256, index // 256, 7)  # every file distinct (ingest skips duplicates)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
            files.append(SourceFile(f"cxr-{index:05d}.png", buffer.getvalue()))
            labels.append(label)
        result = ingest(project, files)
        for series, label in zip(result.series, labels):
            create_revision(series=series, instance=series.instances.get(), labels=label,
                            source="person", status="approved", spacing=(0.5, 0.5), method="manual")
    return time.perf_counter() - started


def chest_ct(depth: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic chest CT ``(D, H, W)`` int16 HU (body, two lungs) and its labels (1 right, 2 left)."""
    z, y, x = np.ogrid[0:depth, 0:size, 0:size]
    c = (size - 1) / 2
    volume = np.full((depth, size, size), -1000, np.int16)
    body = ((x - c) / (0.45 * size)) ** 2 + ((y - c) / (0.35 * size)) ** 2 <= 1
    volume[np.broadcast_to(body, volume.shape)] = 40
    labels = np.zeros(volume.shape, np.uint8)
    for value, cx in ((1, 0.3 * size), (2, 0.7 * size)):  # patient right on the image left (LPS)
        lung = ((x - cx) / (0.14 * size)) ** 2 + ((y - c) / (0.22 * size)) ** 2 + ((z - depth / 2) / (0.45 * depth)) ** 2 <= 1
        lung = lung & body
        volume[lung] = -850
        labels[lung] = value
    volume += np.random.default_rng(0).integers(-20, 20, volume.shape, dtype=np.int16)
    return volume, labels


def ingest_ct(project: Any, depth: int) -> float:
    """Ingest a ``depth``×512×512 CT (NIfTI → DICOM series) and store its labels as a curated (approved) revision."""
    import nibabel as nib

    from annotation.services import create_revision
    from exports import pixels
    from imaging.services import ingest
    from imaging.sources import SourceFile

    started = time.perf_counter()
    volume, labels = chest_ct(depth, 512)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])  # LPS array axes → RAS world; (x, y, z) = (W, H, D)
    data = gzip.compress(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine).to_bytes(), compresslevel=1)
    (series,) = ingest(project, [SourceFile("bench_ct.nii.gz", data)]).series
    instances = pixels.ordered_instances(series)
    geometry = pixels.series_geometry(series, instances)
    create_revision(series=series, instance=None, labels=labels, source="person", status="approved",
                    spacing=tuple(reversed(geometry["spacing_xyz"])), geometry=geometry, method="manual")
    return time.perf_counter() - started


def measure(project_id: int, fmt: str, selection: dict[str, Any]) -> dict[str, Any]:
    """Run one export job in a forked child; its wall time, peak RSS and archive size."""
    import gc

    from django.db import connections

    gc.collect()
    from exports.models import ExportJob

    job = ExportJob.objects.create(project_id=project_id, format=fmt, origin="command",
                                   selection={"kind": "filter", "project_id": project_id, **selection})
    connections.close_all()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child runs the job and reports its seconds
        os.close(read)
        code = 0
        try:
            from exports.services import run_export

            started = time.perf_counter()
            done = run_export(job.pk)
            os.write(write, json.dumps({"seconds": round(time.perf_counter() - started, 2), "status": done.status,
                                        "error": done.error}).encode())
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent, then exit
            os.write(write, json.dumps({"status": "crashed", "error": repr(exc)}).encode())
            code = 1
        finally:
            os.close(write)
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read() or "{}")
    _, _, usage = os.wait4(pid, 0)
    job.refresh_from_db()
    return {"format": fmt, "cases": job.case_count, **report, "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "load_average_1min": round(os.getloadavg()[0], 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "archive_mb": round((job.archive_size or 0) / 2 ** 20, 1), "dataset_hash": job.dataset_hash}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pleura-bench-export-") as tmp:
        database = configure(args.database_url, Path(tmp))
        import django

        django.setup()
        from django.core.management import call_command

        from imaging.models import Project
        from imaging.signals import series_ingested

        call_command("migrate", verbosity=0)
        series_ingested.disconnect(dispatch_uid="modeling.queue_proposals_on_ingest")  # labels are given, no model
        results: dict[str, Any] = {}
        if args.xrays:
            xrays = Project.objects.create(name="bench-xray")
            results["xray_setup_s"] = round(ingest_xrays(xrays, args.xrays, args.size), 1)
            logger.info("ingested %d X-rays in %.1f s", args.xrays, results["xray_setup_s"])
            results["xray"] = []
            for fmt in args.formats:
                row = measure(xrays.pk, fmt, {"modality": "xray"})
                row["target_s"] = TARGETS_S.get(fmt)
                results["xray"].append(row)
                logger.info("%s", json.dumps(row))
        if args.ct_slices:
            ct = Project.objects.create(name="bench-ct")
            results["ct_setup_s"] = round(ingest_ct(ct, args.ct_slices), 1)
            results["ct"] = []
            for fmt in ("seg", "nifti"):
                row = measure(ct.pk, fmt, {"modality": "CT"})
                if fmt == "seg":
                    row.update(target_s=10.0, target_peak_rss_mb=1024)
                results["ct"].append(row)
                logger.info("%s", json.dumps(row))
    return {"benchmark": "export", "database": database, "xrays": args.xrays, "xray_size": args.size,
            "ct_slices": args.ct_slices, "real_xrays": (SHARED / "cxr" / "covidqu").is_dir(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), **results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "export.json")
    parser.add_argument("--xrays", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024, help="X-ray width and height in pixels")
    parser.add_argument("--ct-slices", type=int, default=300)
    parser.add_argument("--formats", nargs="*", default=list(XRAY_FORMATS), choices=XRAY_FORMATS)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/pleura_bench_export"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    failed = [r for r in result.get("xray", []) + result.get("ct", []) if r.get("status") != "succeeded"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
