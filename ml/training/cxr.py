"""Chest X-ray training run driven by a YAML config (``python -m ml train --config ...``)."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.config import load_config, resolve_path
from ml.data import CXRSegmentationDataset, read_manifest
from ml.networks import build_network, count_parameters
from ml.training.trainer import TrainConfig, Trainer, TrainingConfigError, seed_everything
from ml.transforms import AugmentConfig, BatchAugment

logger = logging.getLogger(__name__)


def build_datasets(data_cfg: dict[str, Any], progress: bool) -> tuple[CXRSegmentationDataset, CXRSegmentationDataset]:
    """Train and validation datasets described by the ``data:`` section of a config."""
    manifest = resolve_path(data_cfg["manifest"])
    size = int(data_cfg.get("size", 256))
    kwargs = {"size": size, "low_pct": float(data_cfg.get("low_pct", 0.5)),
              "high_pct": float(data_cfg.get("high_pct", 99.5)), "show_progress": progress}
    train_cases = read_manifest(manifest, [data_cfg.get("train_split", "train")])
    val_cases = read_manifest(manifest, [data_cfg.get("val_split", "val")])
    val_limit = data_cfg.get("val_max_cases")
    if val_limit and len(val_cases) > int(val_limit):
        stride = len(val_cases) / int(val_limit)
        val_cases = [val_cases[int(i * stride)] for i in range(int(val_limit))]
    limit = data_cfg.get("max_cases")
    if limit:
        train_cases, val_cases = train_cases[: int(limit)], val_cases[: max(1, int(limit) // 2)]
    return CXRSegmentationDataset(train_cases, **kwargs), CXRSegmentationDataset(val_cases, **kwargs)


def load_initial_weights(model: torch.nn.Module, path: Path) -> None:
    """Warm start: load a ``state_dict`` or a training checkpoint (``{"model": ...}``) into ``model``.

    Raises ``FileNotFoundError`` with the path when the file is missing, and PyTorch's own error
    (listing the mismatched keys) when the weights do not fit the configured network.
    """
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: no such weights file: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model.load_state_dict(state)
    logger.info("initialised weights from %s", path)


def hard_example_setting(data_cfg: dict[str, Any]) -> tuple[float, float]:
    """``data.hard_examples`` (how much more often badly segmented images are drawn; 0: uniform)
    and ``data.hard_examples_power`` (how sharply the draws lean on the worst ones; default 1)."""
    def number(key: str, default: float, lowest: float, meaning: str) -> float:
        value = data_cfg.get(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < lowest:
            raise TrainingConfigError(f"data.{key} must be a number >= {lowest:g} ({meaning}), got {value!r}")
        return number

    return (number("hard_examples", 0.0, 0.0, "0: uniform sampling"),
            number("hard_examples_power", 1.0, 1.0, "1: in proportion to the Dice deficit"))


def hard_example_weights(trainer: Trainer, train_ds: CXRSegmentationDataset, strength: float, path: Path,
                         reuse: bool = True, power: float = 1.0) -> np.ndarray:
    """Sampling weight per training image: ``1 + strength × deficit**power / mean(deficit**power)``.

    The deficit is ``1 − Dice`` of the starting model on the unaugmented image; with power 1 an
    image segmented twice as badly as the average one is drawn ``1 + 2 × strength`` times as
    often as a perfect one, with power 2 ``1 + 4 × strength`` times. It is measured once, before the first step, and kept in ``path`` (case, Dice,
    weight): a resumed run (``reuse``) draws as the unbroken one would, and the list shows which
    images the run leaned on.
    """
    cases = [f"{c.dataset}/{c.case}" for c in train_ds.cases]
    if reuse and path.is_file():
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if [row["case"] for row in rows] != cases:
            raise TrainingConfigError(f"{path} lists other training cases than this run's; delete it to measure again")
        return np.array([float(row["weight"]) for row in rows])
    dice = trainer.case_dice(train_ds).double().numpy()
    deficit = np.clip(1.0 - dice, 0.0, None)
    lean = deficit ** power
    weights = 1.0 + strength * lean / max(float(lean.mean()), 1e-12)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "dice", "weight"])
        writer.writerows((case, f"{d:.6f}", f"{w:.6f}") for case, d, w in zip(cases, dice, weights))
    tmp.replace(path)
    hardest = np.sort(weights)[::-1][: max(1, len(weights) // 20)]
    logger.info("hard examples: starting model's train Dice %.4f; weights %.2f-%.2f; the hardest 5%% of images get "
                "%.0f%% of the draws (%s)", dice.mean(), weights.min(), weights.max(),
                100.0 * hardest.sum() / weights.sum(), path)
    return weights


def train_from_config(config_path: Path, output_dir: Path | None = None, resume: bool = True) -> Path:
    """Train the chest X-ray model described by ``config_path``.

    Args:
        config_path: YAML config (see ``ml/configs/cxr_default.yaml``).
        output_dir: overrides the config's ``output_dir``.
        resume: continue from ``last.pt`` in the run folder when present.

    Returns:
        The run folder (holds ``best.pt``, ``last.pt``, ``metrics.csv``, ``curve.png``,
        ``config.yaml`` and ``summary.json``).
    """
    cfg = load_config(config_path)
    train_cfg = TrainConfig.from_dict(cfg.get("train"))  # checked before the run folder is written
    strength, power = hard_example_setting(cfg.get("data") or {})
    out_dir = Path(output_dir) if output_dir else resolve_path(cfg.get("output_dir", f"runs/{cfg['name']}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if Path(config_path).resolve() != (out_dir / "config.yaml").resolve():
        shutil.copyfile(config_path, out_dir / "config.yaml")
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    seed_everything(train_cfg.seed)
    train_ds, val_ds = build_datasets(cfg["data"], train_cfg.progress)
    model_cfg = cfg["model"]
    model = build_network(model_cfg["architecture"], int(model_cfg.get("in_channels", 1)),
                          int(model_cfg.get("num_classes", 3)), **model_cfg.get("network_kwargs", {}))
    init_from = model_cfg.get("init_from")
    if init_from and not (resume and (out_dir / "last.pt").is_file()):
        load_initial_weights(model, resolve_path(init_from))
    logger.info("%s: %d parameters, %d train / %d val cases", model_cfg["architecture"],
                count_parameters(model), len(train_ds), len(val_ds))
    augment = BatchAugment(AugmentConfig.from_dict(cfg.get("augment")), seed=train_cfg.seed)
    extra = {"config": cfg, "command": " ".join([Path(sys.executable).name, "-m", "ml", "train", "--config", str(config_path)])}
    trainer = Trainer(model, train_ds, val_ds, train_cfg, out_dir, int(model_cfg.get("num_classes", 3)),
                      augment=augment, extra_state=extra)
    if strength:
        trainer.sample_by(hard_example_weights(trainer, train_ds, strength, out_dir / "hard_examples.csv",
                                             reuse=resume, power=power))
    summary = trainer.fit(resume=resume)
    summary["parameters"] = count_parameters(model)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return out_dir
