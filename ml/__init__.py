"""Pleura machine learning: lung segmentation of chest X-rays and CT, plain PyTorch, no Django.

This module is the package's front door: the backend (``backend/modeling``) imports only the
names in ``__all__``. They are loaded on first use, so ``import ml`` stays light.

Layout (imports flow one way: core ← ``cxr`` / ``ct`` ← ``cli`` / ``experiments``):

* core, knowing no modality: ``networks`` (registry of segmentation nets), ``losses``,
  ``metrics``, ``training`` (generic trainer), ``registry`` (weights + model cards),
  ``packaging`` (card updates), ``export`` (ONNX / TorchScript), ``config``, ``transforms``
  (augmentation), ``formats``;
* ``cxr`` and ``ct``: data, preprocessing, inference (predictor), postprocess, evaluation, train,
  classical baseline, packaging, and ``api`` (the verbs below for one modality);
* ``cli`` (``python -m ml``) and ``experiments`` (measurements the product does not import).

Example::

    import ml

    predictor = ml.load_predictor("cxr")          # or "ct", a card name, a weights path
    result = predictor.predict(image)              # (H, W) labels: 0 background, 1 right, 2 left
    ml.evaluate("cxr", "data/cxr/manifest.csv", "val", "runs/eval_val")
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ml.ct.classical import segment_classical
    from ml.ct.inference import CTPredictor
    from ml.ct.io import CTReadError, read_ct, to_source_slices
    from ml.cxr.inference import CXRPredictor
    from ml.metrics import ShapeMismatchError, dice, hd95, missing_structure_distance
    from ml.registry import ModelCard, RegistryError, list_cards, resolve

LABELS: dict[str, str] = {"0": "background", "1": "right_lung", "2": "left_lung"}
"""Label map shared by every model: 1 = patient's RIGHT lung, 2 = patient's LEFT lung."""

CLASSICAL = "classical"
"""``model`` name of the CT classical (threshold and morphology) baseline."""

_LAZY: dict[str, tuple[str, str]] = {
    "ModelCard": ("ml.registry", "ModelCard"),
    "RegistryError": ("ml.registry", "RegistryError"),
    "list_cards": ("ml.registry", "list_cards"),
    "resolve": ("ml.registry", "resolve"),
    "read_ct": ("ml.ct.io", "read_ct"),
    "CTReadError": ("ml.ct.io", "CTReadError"),
    "to_source_slices": ("ml.ct.io", "to_source_slices"),
    "segment_classical": ("ml.ct.classical", "segment_classical"),
    "dice": ("ml.metrics", "dice"),
    "hd95": ("ml.metrics", "hd95"),
    "missing_structure_distance": ("ml.metrics", "missing_structure_distance"),
    "ShapeMismatchError": ("ml.metrics", "ShapeMismatchError"),
}
"""Public names re-exported from the modules that define them, imported on first access."""

__all__ = [
    "CLASSICAL", "CTReadError", "LABELS", "ModelCard", "RegistryError", "ShapeMismatchError", "dice",
    "evaluate", "hd95", "list_cards", "load_predictor", "missing_structure_distance", "modality_of",
    "predict", "read_ct", "resolve", "segment_classical", "to_source_slices", "train",
]


def __getattr__(name: str) -> Any:
    """Import a lazily exported name (PEP 562) on first access."""
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ml' has no attribute {name!r}")


def modality_of(model: str) -> str:
    """``"cxr"`` or ``"ct"``: the modality of a model name, alias, weights path or ``classical``.

    Raises:
        RegistryError: no such model.
    """
    if model == CLASSICAL:
        return "ct"
    from ml.registry import resolve as resolve_card

    return resolve_card(model).modality


def load_predictor(model: str, device: str | None = None) -> CXRPredictor | CTPredictor:
    """Load a shipped or candidate model once, its weights checked against the card's sha256.

    Args:
        model: name, alias (``"cxr"``, ``"ct"``) or weights path with its card beside it.
        device: torch device for X-ray models (``None``: the card's default, CPU).

    Returns:
        An X-ray predictor (``predict(image (H, W)) -> result.labels (H, W)``) or a CT predictor
        (``predict(volume_hu (D, H, W), spacing_dhw_mm, direction) -> result.labels (D, H, W)``).

    Raises:
        RegistryError: unknown model, malformed card, or weights that do not match their hash.
    """
    if modality_of(model) == "cxr":
        from ml.cxr.inference import CXRPredictor

        return CXRPredictor.from_registry(model, device=device)
    from ml.ct.inference import CTPredictor

    return CTPredictor.from_registry(model)


def predict(model: str, input_path: str | Path, output_path: str | Path) -> dict[str, Any]:
    """Segment one chest X-ray file or CT (series folder or volume file) and write its label map.

    The label map keeps the input's geometry: an X-ray's (H, W) size, a CT's spacing, origin and
    direction.

    Returns:
        A JSON-ready summary: output path, model, shape, confidence, and lung areas (X-ray, px and
        mm²) or volumes (CT, mL), timings.
    """
    if modality_of(model) == "ct":
        from ml.ct import api as ct_api

        return ct_api.predict(model, Path(input_path), Path(output_path))
    from ml.cxr import api as cxr_api

    return cxr_api.predict(model, Path(input_path), Path(output_path))


def evaluate(model: str, manifest: str | Path, split: str, out_dir: str | Path) -> dict[str, Any]:
    """Score a model on one split of a manifest; writes ``per_case.csv`` and ``summary.json``.

    Args:
        model: name, alias, weights path, or ``classical`` (CT baseline).
        manifest: X-ray or CT manifest CSV (its folder is the data root).
        split: split name (``val``, ``test``; CT also ``train`` and ``all``).
        out_dir: output folder.

    Returns:
        The summary: X-ray ``dice_mean`` etc. with bootstrap CIs and per-dataset Dice; CT
        ``dice_right_mean``, ``dice_left_mean``, ``hd95_mm_mean``, ``volume_error_pct_mean``.
    """
    if modality_of(model) == "ct":
        from ml.ct import api as ct_api

        return ct_api.evaluate(model, Path(manifest), split, Path(out_dir))
    from ml.cxr import api as cxr_api

    return cxr_api.evaluate(model, Path(manifest), split, Path(out_dir))


def train(config: str | Path, output_dir: str | Path | None = None, resume: bool = True) -> Path:
    """Train a model from a YAML config under ``ml/configs/`` (its ``modality`` picks the package).

    Args:
        config: YAML config path.
        output_dir: X-ray run folder (default: the config's ``output_dir``); a CT config names its
            own ``out_dir`` and refuses this argument.
        resume: continue from the run folder's ``last.pt`` when present.

    Returns:
        The run folder (X-ray) or the best checkpoint (CT).

    Raises:
        ConfigError: unreadable config; ValueError: ``output_dir`` given for a CT config.
    """
    from ml.config import load_config

    if load_config(config)["modality"] == "ct":
        if output_dir is not None:
            raise ValueError(f"{config}: a CT config names its out_dir; output_dir does not apply")
        from ml.ct import api as ct_api

        return ct_api.train(Path(config), resume=resume)
    from ml.cxr import api as cxr_api

    return cxr_api.train(Path(config), Path(output_dir) if output_dir is not None else None, resume=resume)
