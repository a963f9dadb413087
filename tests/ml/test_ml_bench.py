"""The benchmark runs and reports every figure (timings are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from ml.bench import run_bench, synthetic_cxr


def test_bench_reports_all_sections(tiny_model: Path) -> None:
    results = run_bench(str(tiny_model), threads=1, repeats=2, batch=2, e2e_size=256)
    for key in ("torch_single_image", "torch_batch", "onnx_single_image", "onnx_batch",
                "end_to_end_torch", "end_to_end_onnx"):
        assert results[key]["median_ms"] > 0, key
    assert results["torch_batch"]["images_per_s"] > 0
    json.dumps(results)


def test_synthetic_cxr_is_16bit() -> None:
    img = synthetic_cxr(128)
    assert img.dtype.name == "uint16" and img.shape == (128, 128) and img.max() > 30000
