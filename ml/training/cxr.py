"""Chest X-ray training run driven by a YAML config (``python -m ml train --config ...``)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from ml.config import load_config, resolve_path
from ml.data import CXRSegmentationDataset, read_manifest
from ml.networks import build_network, count_parameters
from ml.training.trainer import TrainConfig, Trainer, seed_everything
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
    summary = trainer.fit(resume=resume)
    summary["parameters"] = count_parameters(model)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return out_dir
