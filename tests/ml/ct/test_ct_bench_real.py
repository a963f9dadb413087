"""The CT benchmark also times a real DICOM series (issue 24); timings are reported, never asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.ct.bench_real import bench_real_series, find_real_series


def test_real_series_is_timed_end_to_end_in_its_own_process(shared_data: Path) -> None:
    series = find_real_series(shared_data / "ct" / "dicom")
    assert series is not None and series.name == "lungdx_A0001"
    report = bench_real_series("classical", threads=1, series=series)
    assert report["series"] == "lungdx_A0001" and report["shape_dhw"] == [64, 512, 512]
    for stage in ("read_s", "segment_s", "write_s", "total_s"):
        assert report[stage] > 0, stage
    assert set(report["stages_s"]) == {"segment_s", "quantify_s"}
    assert report["peak_rss_mb"] > 0 and report["volumes"]["total_volume_ml"] > 1000
    assert report["linear_estimate_300_slices_s"] == pytest.approx(report["seconds_per_slice"] * 300, abs=0.05)


def test_no_series_is_reported_as_skipped(tmp_path: Path) -> None:
    assert find_real_series(tmp_path / "absent") is None
    assert find_real_series(tmp_path) is None
