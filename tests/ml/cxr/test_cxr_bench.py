"""The benchmark runs and reports every figure (timings are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from ml.cxr.bench import run_bench, synthetic_cxr


def test_bench_reports_all_sections(tiny_model: Path) -> None:
    results = run_bench(str(tiny_model), threads=1, repeats=2, batch=2, e2e_size=256)
    for key in ("torch_single_image", "torch_batch", "onnx_single_image", "onnx_batch",
                "end_to_end_torch", "end_to_end_onnx", "end_to_end_dicom_torch", "end_to_end_dicom_onnx"):
        assert results[key]["median_ms"] > 0, key
    assert results["torch_batch"]["images_per_s"] > 0
    assert results["end_to_end_torch"]["image"].endswith(".png")
    assert results["end_to_end_dicom_torch"]["image"].endswith(".dcm")
    json.dumps(results)


def test_bench_of_a_given_file_times_that_file(tiny_model: Path, tmp_path: Path) -> None:
    from ml.cxr.bench import write_dicom_xray
    from ml.cxr.data import read_input_image

    path = write_dicom_xray(synthetic_cxr(96)[:, :80], tmp_path / "film.dcm", spacing_mm=0.2)
    pixels, photometric, spacing = read_input_image(path)
    assert pixels.shape == (96, 80) and photometric == "MONOCHROME2" and spacing == (0.2, 0.2)
    results = run_bench(str(tiny_model), threads=1, repeats=2, batch=2, image_path=path)
    assert results["end_to_end_torch"]["image"] == "film.dcm"
    assert "end_to_end_dicom_torch" not in results


def test_synthetic_cxr_is_16bit() -> None:
    img = synthetic_cxr(128)
    assert img.dtype.name == "uint16" and img.shape == (128, 128) and img.max() > 30000
