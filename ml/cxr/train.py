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
from ml.cxr.data import CXRSegmentationDataset, evenly_spaced, read_manifest
from ml.networks import build_network, count_parameters
from ml.registry import sha256_file
from ml.training.trainer import TrainConfig, Trainer, TrainingConfigError, seed_everything, write_atomic
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
    if val_limit:
        val_cases = evenly_spaced(val_cases, int(val_limit))
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
        value = data_cfg.get(key)
        if value is None:  # absent or empty: the default
            return default
        try:
            number = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < lowest:
            raise TrainingConfigError(f"data.{key} must be a number >= {lowest:g} ({meaning}), got {value!r}")
        return number

    return (number("hard_examples", 0.0, 0.0, "0: uniform sampling"),
            number("hard_examples_power", 1.0, 1.0, "1: in proportion to the Dice deficit"))


def hard_example_weights(trainer: Trainer, train_ds: CXRSegmentationDataset, strength: float, path: Path, *,
                         power: float = 1.0, resuming: bool = False,
                         measured_with: dict[str, Any] | None = None) -> np.ndarray:
    """Sampling weight per training image: ``1 + strength × d**power / mean(d**power)``.

    ``d`` is the Dice deficit ``1 − Dice`` of the starting model on the unaugmented image, so
    the images the model segments worst are drawn most; power 2 leans on them harder (the
    weight grows with the square of the deficit). The Dice values are measured once, before the
    first step, and kept in ``path`` (case, Dice, weight) with what they were measured with
    (``measured_with``: the starting weights and the preprocessing) beside it in
    ``path.with_suffix(".json")``. A run that resumes from ``last.pt`` (``resuming``) cannot
    measure its starting model any more: it reads them back, so that it draws as the unbroken
    run would, and refuses them when they are missing or were measured with anything else. The
    weights are always computed from the Dice values as written, with the current strength and
    power.
    """
    cases = [f"{c.dataset}/{c.case}" for c in train_ds.cases]
    measured_with = dict(measured_with or {})
    record = path.with_suffix(".json")
    if resuming:
        dice = _stored_dice(path, record, cases, measured_with)
    else:
        measured = trainer.case_dice(train_ds).double().numpy()
        dice = np.array([float(f"{d:.6f}") for d in measured])  # exactly what a resumed run reads back
        record_text = json.dumps({"measured_with": measured_with, "cases": len(cases)}, indent=2) + "\n"
        write_atomic(record, lambda tmp: tmp.write_text(record_text))
    deficit = np.clip(1.0 - dice, 0.0, None)
    lean = deficit ** power
    weights = 1.0 + strength * lean / max(float(lean.mean()), 1e-12)
    def write_rows(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "dice", "weight"])
            writer.writerows((case, f"{d:.6f}", f"{w:.6f}") for case, d, w in zip(cases, dice, weights))

    write_atomic(path, write_rows)
    hardest = np.sort(weights)[::-1][: max(1, len(weights) // 20)]
    logger.info("hard examples: starting model's train Dice %.4f; weights %.2f-%.2f; the hardest 5%% of images get "
                "%.0f%% of the draws (%s)", dice.mean(), weights.min(), weights.max(),
                100.0 * hardest.sum() / weights.sum(), path)
    return weights


def _stored_dice(path: Path, record: Path, cases: list[str], measured_with: dict[str, Any]) -> np.ndarray:
    """The Dice values a run measured before its first step; ``TrainingConfigError`` when they
    are missing or do not belong to this run's training cases and starting model."""
    again = "start the run afresh (--no-resume) or in another output folder"
    if not path.is_file() or not record.is_file():
        raise TrainingConfigError(f"{path} (or {record.name}) is missing: this run resumes from last.pt, whose starting "
                                  f"model can no longer be scored for hard-example sampling; {again}")
    stored = json.loads(record.read_text()).get("measured_with")
    if stored != measured_with:
        raise TrainingConfigError(f"{path} was measured with {stored}, this run's config says {measured_with}; {again}")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if [row["case"] for row in rows] != cases:
        raise TrainingConfigError(f"{path} lists other training cases than this run's; {again}")
    return np.array([float(row["dice"]) for row in rows])


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
    resuming = resume and (out_dir / "last.pt").is_file()
    if init_from and not resuming:
        load_initial_weights(model, resolve_path(init_from))
    logger.info("%s: %d parameters, %d train / %d val cases", model_cfg["architecture"],
                count_parameters(model), len(train_ds), len(val_ds))
    augment = BatchAugment(AugmentConfig.from_dict(cfg.get("augment")), seed=train_cfg.seed)
    extra = {"config": cfg, "command": " ".join([Path(sys.executable).name, "-m", "ml", "train", "--config", str(config_path)])}
    trainer = Trainer(model, train_ds, val_ds, train_cfg, out_dir, int(model_cfg.get("num_classes", 3)),
                      augment=augment, extra_state=extra)
    if strength:
        measured_with = {"init_from": str(init_from) if init_from else None,
                         "init_sha256": sha256_file(resolve_path(init_from)) if init_from and resolve_path(init_from).is_file() else None,
                         "size": train_ds.size, "low_pct": train_ds.low_pct, "high_pct": train_ds.high_pct}
        trainer.sample_by(hard_example_weights(trainer, train_ds, strength, out_dir / "hard_examples.csv",
                                               power=power, resuming=resuming, measured_with=measured_with))
    summary = trainer.fit(resume=resume)
    summary["parameters"] = count_parameters(model)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return out_dir
