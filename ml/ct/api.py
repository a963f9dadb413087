"""CT entry points used by ``python -m ml`` (train, evaluate, predict, bench) and by workers.

``model`` arguments accept ``"ct"`` (the shipped default), ``"classical"`` (the classical
baseline), a card name from ``ml/weights``, or a ``.pt`` weights path with its card beside it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from ml import CLASSICAL
from ml.config import resolve_path
from ml.ct import train as ct_train
from ml.ct.classical import segment_classical
from ml.ct.data import CaseRecord
from ml.ct.evaluation import Segmenter, evaluate_cases, selected_records
from ml.ct.inference import CTPredictor, CTResult, predict_classical
from ml.ct.io import read_ct, write_mask
from ml.ct.quantify import coverage_warnings
from ml.metrics import write_json
from ml.registry import ModelCard, list_cards, resolve

logger = logging.getLogger(__name__)

__all__ = ["CLASSICAL", "CTPredictor", "CTResult", "bench", "evaluate", "predict", "segment_classical", "train"]


def train(config_path: Path, resume: bool = True) -> Path:
    """Train the CT lung network from a YAML config; returns the best checkpoint path.

    ``resume=False`` starts from scratch even when the run folder holds a ``last.pt``.
    """
    return ct_train.train(Path(config_path), resume=resume)


def _segmenter(model: str) -> tuple[str, Segmenter]:
    """A callable ``(volume_hu, spacing, direction) -> CTResult`` for a model name."""
    if model == CLASSICAL:
        return CLASSICAL, predict_classical
    predictor = CTPredictor.from_registry(model)
    return predictor.name, predictor.predict


def _loco_partners(card: ModelCard) -> dict[str, ModelCard]:
    """Fold models of ``card``: excluded case → fold card (cards with ``training.loco_of``).

    Folds are looked up beside ``card`` (``ml/weights`` for a shipped model, the scratch folder
    of a candidate), so that a candidate is never scored with the shipped model's folds.
    """
    folder = Path(card.card_path).parent if card.card_path else None
    partners: dict[str, ModelCard] = {}
    for other in list_cards(folder):
        if other.training.get("loco_of") == card.name and other.name != card.name:
            for case in other.training.get("excluded_cases", []):
                partners[case] = other
    return partners


def evaluate(model: str, manifest: Path, split: str, out_dir: Path) -> dict[str, Any]:
    """Evaluate a CT model on a manifest split; writes ``per_case.csv`` and ``summary.json``.

    A case the model was trained on is segmented by the model's leave-one-case-out fold that
    excluded it, when such a fold is shipped (see :mod:`ml.ct.evaluation`).

    Args:
        model: ``"ct"``, ``"classical"``, a card name or a weights path.
        manifest: CT manifest CSV.
        split: ``train``, ``val``, ``test`` or ``all``.
        out_dir: output folder.

    Returns:
        The summary dict (dice_right_mean, dice_left_mean, dice_mean, hd95_mm_mean,
        volume_error_pct_mean, n_cases, ...).
    """
    records = selected_records(resolve_path(manifest), split)
    if model == CLASSICAL:
        label, segment = _segmenter(model)
        return evaluate_cases(records, lambda record: (label, segment, False), Path(out_dir))
    card = resolve(model)
    trained_on = set(card.training.get("cases", []))
    partners = _loco_partners(card)
    cache: dict[str, Segmenter] = {}

    def choose(record: CaseRecord) -> tuple[str, Segmenter, bool]:
        fold = partners.get(record.case) if record.case in trained_on else None
        name = fold.name if fold else card.name
        if name not in cache:
            cache[name] = _segmenter(str(fold.weights_path) if fold else model)[1]
        label = f"{name} (loco)" if fold else name
        return label, cache[name], record.case in trained_on and fold is None

    summary = evaluate_cases(records, choose, Path(out_dir))
    summary.update({"model": card.name, "split": split, "manifest": str(manifest)})
    write_json(Path(out_dir) / "summary.json", summary)
    return summary


def segment_file(model: str, input_path: Path) -> tuple[CTResult, Any, np.ndarray]:
    """Read a CT (DICOM folder or volume file) and segment it; returns ``(result, meta, volume_hu)``."""
    volume, meta = read_ct(input_path)
    _, segment = _segmenter(model)
    return segment(volume, meta.spacing_dhw, meta.direction), meta, volume


def predict(model: str, input_path: Path, output_path: Path) -> dict[str, Any]:
    """Segment a CT, write the mask in the input's geometry (NIfTI), return volumes.

    Args:
        model: ``"ct"``, ``"classical"``, a card name or a weights path.
        input_path: DICOM series folder or NIfTI/NRRD/MHA file.
        output_path: mask file to write (``.nii.gz``); a folder gets ``lungs.nii.gz`` inside.

    Returns:
        Volumes (mL), mean HU, emphysema index per lung and total, plus method, confidence,
        warnings from reading, and the written path.
    """
    output_path = Path(output_path)
    if output_path.is_dir() or output_path.suffix == "":
        output_path = output_path / "lungs.nii.gz"
    result, meta, volume = segment_file(model, Path(input_path))
    write_mask(result.labels, meta, output_path)
    return {
        **result.volumes,
        "method": result.method,
        "confidence": round(result.confidence, 4),
        "mask": str(output_path),
        "warnings": [*meta.warnings, *coverage_warnings(result.labels, volume, meta.spacing_dhw)],  # issue 24
    }


def synthetic_ct(shape: tuple[int, int, int] = (300, 512, 512), seed: int = 0) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A chest-like ``(D, H, W)`` int16 HU volume for benchmarking (body, two lungs, trachea).

    Returns:
        ``(volume_hu, spacing)`` with spacing ``(D, H, W)`` in mm.
    """
    from ml.ct.phantom import make_phantom

    phantom = make_phantom(shape=shape, spacing=(1.0, 0.7, 0.7), seed=seed)
    return phantom.volume_hu, phantom.spacing


def bench(model: str = "ct", out_path: Path | None = None, input_path: Path | None = None,
          threads: int = 2) -> dict[str, Any]:
    """End-to-end CT benchmark: file in → mask file and volumes out.

    Writes a synthetic 512×512×300 NIfTI (unless ``input_path`` is given), then times reading,
    segmenting, quantifying and writing the mask with ``threads`` torch threads. Without
    ``input_path`` it also times a real DICOM series from ``../shared/data`` in a child process
    (``real_series``, see :mod:`ml.ct.bench_real`).

    Args:
        model: model name (see module docstring).
        out_path: JSON file for the result (optional).
        input_path: a real CT to use instead of the synthetic volume.
        threads: torch and SimpleITK threads (the target is 2 CPU cores).

    Returns:
        Timings (s), peak resident memory (MB), volume shape, volumes. ``total_s`` runs from
        reading the file to the written mask; ``cli_total_s`` adds ``startup_s`` (interpreter
        start and imports before the benchmark began), as a command-line run would see.
    """
    startup_s = _process_age_s()  # interpreter start and imports, as in a `python -m ml predict` run
    real_series = None
    if input_path is None:  # issue 24: a real DICOM series end to end, first (no torch threads spinning here yet)
        from ml.ct.bench_real import bench_real_series

        real_series = bench_real_series(model, threads)
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)  # reading and writing stay on the same cores
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(input_path) if input_path else _write_synthetic(Path(tmp) / "bench_ct.nii.gz")
        start = time.perf_counter()
        volume, meta = read_ct(source)
        read_s = time.perf_counter() - start
        _, segment = _segmenter(model)
        load_s = time.perf_counter() - start - read_s
        result = segment(volume, meta.spacing_dhw, meta.direction)
        segment_s = time.perf_counter() - start - read_s - load_s
        write_mask(result.labels, meta, Path(tmp) / "mask.nii.gz")
        total_s = time.perf_counter() - start
    report = {
        "benchmark": "ct_end_to_end",
        "model": model,
        "input": str(input_path) if input_path else "synthetic 512x512x300 NIfTI",
        "shape_dhw": list(volume.shape),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "read_s": round(read_s, 3),
        "model_load_s": round(load_s, 3),
        "segment_s": round(segment_s, 3),
        "stages_s": {k: round(v, 3) for k, v in result.timings.items()},
        "write_s": round(total_s - read_s - load_s - segment_s, 3),
        "total_s": round(total_s, 3),
        "total_without_model_load_s": round(total_s - load_s, 3),
        "startup_s": None if startup_s is None else round(startup_s, 3),
        "cli_total_s": None if startup_s is None else round(startup_s + total_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "volumes": result.volumes,
    }
    if real_series is not None:
        report["real_series"] = real_series
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out_path), report)
    return report


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or ``None`` where that is unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks
    except (OSError, ValueError, IndexError):
        return None


def _write_synthetic(path: Path) -> Path:
    """Write the synthetic bench CT in a child process, so its memory is not in the peak RSS."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=write_synthetic_nifti, args=(str(path),))
    process.start()
    process.join()
    if process.exitcode != 0 or not path.is_file():
        raise RuntimeError(f"{path}: writing the synthetic bench volume failed (exit {process.exitcode})")
    return path


def write_synthetic_nifti(path: str) -> None:
    """Write :func:`synthetic_ct` as a compressed NIfTI (LPS, spacing 0.7×0.7×1 mm)."""
    import SimpleITK as sitk

    volume, spacing = synthetic_ct()
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    sitk.WriteImage(image, path, useCompression=True)
