"""The CT benchmark on a real DICOM series, beside the synthetic volume (issue 24).

Synthetic anatomy is kinder to post-processing than real anatomy (airways that branch,
bowel gas, vessels), so :func:`ml.ct.api.bench` also times a real scanner series from
``../shared/data/ct/dicom`` end to end: read, segment, quantify, write, with stage times and
peak memory. It runs in a fresh child process, so that its peak memory is its own.
"""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

from ml.config import resolve_path

logger = logging.getLogger(__name__)

REAL_SERIES_ROOT = "../shared/data/ct/dicom"
"""Where real DICOM series are looked for (``PLEURA_SHARED_DATA`` replaces ``../shared/data``)."""
TARGET_SLICES = 300
"""The slice count of the speed target (≤ 10 s end to end, ≤ 2 GB on 2 cores)."""


def find_real_series(root: str | Path = REAL_SERIES_ROOT) -> Path | None:
    """The first DICOM series folder (sorted by name) under ``root``, or ``None`` when absent."""
    folder = resolve_path(root)
    if not folder.is_dir():
        return None
    series = sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("*.dcm")))
    return series[0] if series else None


def bench_real_series(model: str, threads: int, series: Path | None = None) -> dict[str, Any]:
    """Time ``model`` end to end on a real DICOM series in a child process.

    Args:
        model: CT model name (see :mod:`ml.ct.api`).
        threads: torch and SimpleITK threads.
        series: the series folder; the first one under :data:`REAL_SERIES_ROOT` when ``None``.

    Returns:
        The child's :func:`ml.ct.api.bench` report for the series, plus ``seconds_per_slice``
        and ``linear_estimate_300_slices_s`` (end-to-end time without model loading scaled to
        300 slices: an estimate, not a measurement), or ``{"skipped": reason}``.
    """
    series = series or find_real_series()
    if series is None:
        return {"skipped": f"no DICOM series under {resolve_path(REAL_SERIES_ROOT)}"}
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        report = pool.apply(_bench_in_child, (model, str(series), threads))
    slices = int(report["shape_dhw"][0])
    per_slice = report["total_without_model_load_s"] / slices
    report.update({"series": series.name, "seconds_per_slice": round(per_slice, 4),
                   "linear_estimate_300_slices_s": round(per_slice * TARGET_SLICES, 2)})
    return report


def _bench_in_child(model: str, series: str, threads: int) -> dict[str, Any]:
    from ml.ct.api import bench

    report = bench(model, None, input_path=Path(series), threads=threads)
    own_peak = _peak_of_this_address_space_mb()
    if own_peak is not None:  # ru_maxrss carries the parent's peak over fork and exec; VmHWM does not
        report["peak_rss_mb"] = own_peak
    return report


def _peak_of_this_address_space_mb() -> float | None:
    """``VmHWM`` of ``/proc/self/status`` in MB (Linux), or ``None`` where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None
