"""Chest X-ray entry points used by ``python -m ml`` (train, evaluate, predict, bench) and :mod:`ml`.

``model`` arguments accept ``"cxr"`` (the shipped default), a card name from ``ml/weights`` or a
``.pt`` weights path with its card beside it. The CT counterpart is :mod:`ml.ct.api`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NO_POSTPROCESSING: dict[str, bool] = {"keep_largest": False, "remove_specks": False, "fill_holes": False,
                                      "smooth": False, "fix_sides": False}
"""Post-processing settings that switch every step off (``--no-postprocess``)."""

__all__ = ["NO_POSTPROCESSING", "bench", "evaluate", "predict", "train"]


def train(config_path: Path, output_dir: Path | None = None, resume: bool = True) -> Path:
    """Train an X-ray model from a YAML config; returns the run folder.

    Args:
        config_path: YAML config (e.g. ``ml/configs/cxr_default.yaml``).
        output_dir: run folder (default: the config's ``output_dir``).
        resume: continue from ``<output_dir>/last.pt`` when present.
    """
    from ml.cxr.train import train_from_config

    return train_from_config(Path(config_path), output_dir, resume=resume)


def evaluate(model: str, manifest: Path, split: str, out_dir: Path, tta: bool | None = None,
             postprocess: bool = True, threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate an X-ray model on a manifest split; writes ``per_case.csv`` and ``summary.json``.

    Args:
        model: ``"cxr"``, a card name or a weights path.
        manifest: X-ray manifest CSV (its folder is the data root).
        split: split name, e.g. ``val`` or ``test``.
        out_dir: output folder.
        tta: flip test-time augmentation (``None``: the card's setting).
        postprocess: ``False`` switches every post-processing step off.
        threads: CPU threads for torch (``None``: torch's default).
        progress: show a progress bar.

    Returns:
        The summary dict (dice_mean, dice_median, dice_p05, CIs, per-dataset Dice, ...).
    """
    from ml.cxr.evaluation import evaluate_model

    kwargs: dict[str, Any] = {}
    if tta is not None:
        kwargs["tta_flip"] = tta
    if not postprocess:
        kwargs["postprocessing"] = dict(NO_POSTPROCESSING)
    return evaluate_model(model, Path(manifest), split, Path(out_dir), progress=progress, num_threads=threads,
                          **kwargs)


def predict(model: str, input_path: Path, output_path: Path, photometric: str | None = None,
            tta: bool | None = None, threads: int | None = None) -> dict[str, Any]:
    """Segment one chest X-ray file (PNG/JPEG/TIFF/DICOM) and write its uint8 label map.

    Args:
        model: ``"cxr"``, a card name or a weights path.
        input_path: the image file.
        output_path: label file (``.png``/``.tif``), written at the input's size (H, W).
        photometric: ``MONOCHROME1``/``MONOCHROME2`` override (``None``: from the file).
        tta: flip test-time augmentation (``None``: the card's setting).
        threads: CPU threads for torch.

    Returns:
        Output path, model name, shape, confidence, lung areas (px and mm²), timings (ms).
    """
    from PIL import Image

    from ml.cxr.data import read_input_image
    from ml.cxr.inference import CXRPredictor

    image, file_photometric, spacing = read_input_image(Path(input_path))
    predictor = CXRPredictor.from_registry(model, num_threads=threads,
                                           **({"tta_flip": tta} if tta is not None else {}))
    result = predictor.predict(image, photometric or file_photometric, spacing)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result.labels).save(output_path)
    return {"output": str(output_path), "model": result.model_name, "shape": list(result.labels.shape),
            "confidence": result.confidence, "areas_px": result.areas_px, "areas_mm2": result.areas_mm2,
            "timings_ms": {stage: round(ms, 1) for stage, ms in result.timings_ms.items()}}


def bench(model: str = "cxr", out_path: Path | None = None, input_path: Path | None = None, threads: int = 2,
          repeats: int | None = None, batch: int | None = None) -> dict[str, Any]:
    """CPU speed of an X-ray model (see :func:`ml.cxr.bench.run_bench`); also written to ``out_path``."""
    from ml.cxr.bench import run_bench

    given = {name: value for name, value in (("repeats", repeats), ("batch", batch)) if value is not None}
    results = run_bench(model, threads=threads, image_path=input_path, **given)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(results, indent=2) + "\n")
    return results
