"""Speed benchmark of a chest X-ray model (``python -m ml bench``): JSON results, never a test.

Measures, on the current machine: single-image model latency at the model's input size, batched
throughput, PyTorch vs onnxruntime, and end to end from a 2048×2048 16-bit file on disk to
the label map at full size (read, preprocess, model, post-process, resample), for a PNG and for
an uncompressed DICOM file (what the platform's workers read), both through ``ml predict``'s reader.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ml.export import export_model
from ml.cxr.inference import CXRPredictor, OnnxBackend, TorchBackend
from ml.registry import load_model

logger = logging.getLogger(__name__)


def _time_ms(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "mean_ms": statistics.fmean(times)}


def synthetic_cxr(size: int = 2048, seed: int = 0) -> np.ndarray:
    """A (size, size) uint16 chest-X-ray-like test image: bright body, two dark lung fields."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.exp(-(((xx - 0.5) / 0.42) ** 2 + ((yy - 0.55) / 0.5) ** 4))
    lungs = sum(np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.45) / 0.22) ** 2)) for cx in (0.32, 0.68))
    rng = np.random.default_rng(seed)
    img = 0.2 + 0.6 * body - 0.45 * lungs + 0.02 * rng.standard_normal((size, size))
    return (np.clip(img, 0, 1) * 65535).astype(np.uint16)


def write_dicom_xray(pixels: np.ndarray, path: Path, spacing_mm: float = 0.143) -> Path:
    """Write (H, W) uint16 ``pixels`` as an uncompressed DX DICOM file (Explicit VR Little Endian)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "DX", int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def run_bench(model: str = "cxr", threads: int = 2, repeats: int = 20, batch: int = 16,
              e2e_size: int = 2048, image_path: Path | None = None) -> dict[str, Any]:
    """Benchmark ``model``; returns a JSON-able dict of timings (milliseconds, images/s)."""
    torch.set_num_threads(threads)
    net, card = load_model(model)
    size = int(card.input_size[-1])
    x1 = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    xb = np.repeat(x1, batch, axis=0)
    torch_fwd = TorchBackend(net, torch.device("cpu"))
    results: dict[str, Any] = {
        "model": card.name, "architecture": card.architecture, "parameters": card.parameters,
        "input_size": card.input_size, "threads": threads, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
    }
    results["torch_single_image"] = _time_ms(lambda: torch_fwd(x1), repeats)
    tb = _time_ms(lambda: torch_fwd(xb), max(3, repeats // 4), warmup=1)
    results["torch_batch"] = {"batch": batch, **tb, "images_per_s": 1e3 * batch / tb["median_ms"]}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(export_model(model, Path(tmp), formats=("onnx",))["onnx"])
        ort_fwd = OnnxBackend(onnx_path, num_threads=threads)
        results["onnx_single_image"] = _time_ms(lambda: ort_fwd(x1), repeats)
        ob = _time_ms(lambda: ort_fwd(xb), max(3, repeats // 4), warmup=1)
        results["onnx_batch"] = {"batch": batch, **ob, "images_per_s": 1e3 * batch / ob["median_ms"]}
        if image_path is not None:
            files = {"end_to_end": Path(image_path)}
        else:
            pixels = synthetic_cxr(e2e_size)
            files = {"end_to_end": Path(tmp) / f"cxr_{e2e_size}.png",
                     "end_to_end_dicom": write_dicom_xray(pixels, Path(tmp) / f"cxr_{e2e_size}.dcm")}
            Image.fromarray(pixels).save(files["end_to_end"])
        for key, path in files.items():
            for name, fwd in (("torch", torch_fwd), ("onnx", ort_fwd)):
                results[f"{key}_{name}"] = _end_to_end(CXRPredictor(fwd, card), path, max(5, repeats // 2))
    return results


def _end_to_end(predictor: CXRPredictor, path: Path, repeats: int) -> dict[str, Any]:
    """File on disk → full-size label map, read as ``ml predict`` reads it."""
    from ml.cxr.data import read_input_image

    def run() -> Any:
        pixels, photometric, spacing = read_input_image(path)
        return predictor.predict(pixels, photometric, spacing)

    timing = _time_ms(run, repeats)
    return {"image": path.name, "tta_flip": predictor.tta_flip, **timing, "stages_ms": run().timings_ms}
