"""Training the 2D CT lung network (lung vs background) from a YAML config.

Config keys (see ``ml/configs/ct_default.yaml``): ``manifest``, ``train_splits``,
``val_splits``, ``exclude_cases`` (leave-one-case-out folds), ``pseudo_label`` (unlabelled CT
inputs labelled by the classical method), ``case_weight``, ``size``, ``context``, ``network``,
``batch_size``, ``lr``, ``epochs``, ``samples_per_epoch``, ``max_minutes``, ``threads``,
``seed``, ``out_dir``, ``consolidation`` (chance per slice of synthetic consolidation, default 0).
The checkpoint with the best mean val Dice is kept as ``best.pt``; ``last.pt`` is written after
every epoch, and a run started again with the same config continues from it (model, optimiser,
random state, and the time already spent, so the wall-clock schedule picks up where it stopped);
a larger ``epochs`` or ``max_minutes`` extends it; ``python -m ml train --no-resume`` starts again.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader, WeightedRandomSampler

from ml.ct.augment import augment_batch
from ml.ct.classical import segment_classical
from ml.ct.data import PreparedCase, SliceDataset, case_weights, load_prepared, prepare_arrays, read_manifest
from ml.ct.io import read_ct
from ml.config import resolve_path
from ml.ct.network import build_ct_network, predict_lung_probability
from ml.training.trainer import save_atomic

logger = logging.getLogger(__name__)


class TrainConfigError(ValueError):
    """A CT training config is missing a key or has an unusable value."""


def load_config(path: Path) -> dict[str, Any]:
    """Read a CT training config (YAML) and check its required keys."""
    if not path.is_file():
        raise TrainConfigError(f"{path}: config not found")
    config = yaml.safe_load(path.read_text()) or {}
    for key in ("manifest", "out_dir"):
        if key not in config:
            raise TrainConfigError(f"{path}: missing key {key!r}")
    if config.get("modality", "ct") != "ct":
        raise TrainConfigError(f"{path}: modality is {config.get('modality')!r}, expected 'ct'")
    return config


def _prepare(config: dict[str, Any], cache: Path) -> tuple[list[PreparedCase], list[PreparedCase]]:
    size = int(config.get("size", 192))
    exclude = set(config.get("exclude_cases", []))
    train_splits = set(config.get("train_splits", ["train"]))
    val_splits = set(config.get("val_splits", ["val"]))
    train, val = [], []
    for record in read_manifest(resolve_path(config["manifest"]), "all"):
        if record.case in exclude or record.labels is None:
            continue
        prepared = load_prepared(cache / f"{record.case}_{size}.npz", record.ct, record.labels, size, record.case)
        if record.split in train_splits:
            train.append(prepared)
        elif record.split in val_splits:
            val.append(prepared)
    for source in config.get("pseudo_label", []):
        train.append(_pseudo_labelled(resolve_path(source), size, cache))
    logger.info("train cases %s; val cases %s", [c.case for c in train], [c.case for c in val])
    return train, val


def _pseudo_labelled(source: Path, size: int, cache: Path) -> PreparedCase:
    """An unlabelled CT with classical-method labels (pseudo-labels), cached."""
    case = f"pseudo_{source.name}"
    path = cache / f"{case}_{size}.npz"
    if path.is_file():
        data = np.load(path)
        return PreparedCase(case, data["image"], data["lung"])
    volume, meta = read_ct(source)
    labels = segment_classical(volume, meta.spacing_dhw, meta.direction)
    prepared = prepare_arrays(volume, labels, size, case)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=prepared.image, lung=prepared.lung)
    return prepared


def volume_dice(model: torch.nn.Module, case: PreparedCase, context: int) -> float:
    """3D Dice of the thresholded lung probability against ``case.lung`` on the model grid."""
    model.eval()
    prediction = predict_lung_probability(model, case.image, context) > 0.5
    truth = case.lung > 0
    denominator = prediction.sum() + truth.sum()
    return float(2.0 * (prediction & truth).sum() / denominator) if denominator else 1.0


class TimeCosineSchedule:
    """Learning rate by elapsed wall-clock time: linear warm-up, then cosine decay to 1 %.

    Training on shared CPUs runs at an unpredictable speed; tying the schedule to a time budget
    (``max_minutes``) guarantees that the rate is annealed when the budget ends.
    """

    def __init__(self, optimiser: torch.optim.Optimizer, max_lr: float, budget_s: float, warmup: float = 0.05,
                 elapsed_s: float = 0.0):
        self.optimiser = optimiser
        self.max_lr = max_lr
        self.budget_s = budget_s
        self.warmup = warmup
        self.start = time.monotonic() - elapsed_s  # a resumed run continues where its clock stopped

    @property
    def elapsed_s(self) -> float:
        """Training seconds spent, earlier, interrupted invocations of a resumed run included."""
        return time.monotonic() - self.start

    @property
    def progress(self) -> float:
        """Fraction of the time budget used."""
        return self.elapsed_s / self.budget_s

    @property
    def finished(self) -> bool:
        return self.progress >= 1.0

    def step(self) -> float:
        """Set and return the learning rate for the current time."""
        p = min(self.progress, 1.0)
        if p < self.warmup:
            lr = self.max_lr * (0.1 + 0.9 * p / self.warmup)
        else:
            q = (p - self.warmup) / (1.0 - self.warmup)
            lr = self.max_lr * (0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * q)))
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        return lr


def train(config_path: Path, resume: bool = True) -> Path:
    """Train the CT lung network; returns the path of the best checkpoint.

    Args:
        config_path: YAML config (see module docstring).
        resume: continue from ``<out_dir>/last.pt`` when it exists (``False``: start again).

    Returns:
        ``<out_dir>/best.pt``: a dict with ``state_dict``, ``config``, ``config_path``, ``epoch``,
        ``val_dice`` (and what resuming needs: optimiser and random state, seconds spent).
    """
    config = load_config(Path(config_path))
    torch.set_num_threads(int(config.get("threads", 1)))
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    out_dir = resolve_path(config["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    train_cases, val_cases = _prepare(config, resolve_path(config.get("cache_dir", "runs/ct_cache")))
    context = int(config.get("context", 1))
    dataset = SliceDataset(train_cases, context=context, seed=seed)
    weights = case_weights(dataset, config.get("case_weight", {}))
    samples = int(config.get("samples_per_epoch", 512))
    loader = DataLoader(
        dataset,
        batch_size=int(config.get("batch_size", 8)),
        sampler=WeightedRandomSampler(weights, num_samples=samples, replacement=True),
        num_workers=0,
    )
    model = build_ct_network(2 * context + 1, 2, **config.get("network", {}))
    epochs = int(config.get("epochs", 1000))
    optimiser = torch.optim.AdamW(model.parameters(), lr=float(config.get("lr", 2e-3)), weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    resumed = _resume(out_dir / "last.pt", config, model, optimiser, generator) if resume else dict(FRESH_RUN)
    schedule = TimeCosineSchedule(optimiser, float(config.get("lr", 2e-3)), 60.0 * float(config.get("max_minutes", 25)),
                                  elapsed_s=resumed["elapsed_s"])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    best, best_path = resumed["best"], out_dir / "best.pt"
    header = ["epoch", "train_loss", "val_dice", *[c.case for c in val_cases], "seconds"]
    metrics_path = out_dir / "metrics.csv"
    append = bool(resumed["epoch"]) and metrics_path.is_file()
    with metrics_path.open("a" if append else "w", newline="") as handle:
        writer = csv.writer(handle)
        if not append:
            writer.writerow(header)
        for epoch in range(resumed["epoch"] + 1, epochs + 1):
            if schedule.finished:
                logger.info("time budget already spent before epoch %d", epoch)
                break
            train_loss = _train_epoch(model, loader, optimiser, schedule, loss_fn, generator,
                                      float(config.get("consolidation", 0.0)))
            per_case = [volume_dice(model, c, context) for c in val_cases]
            val_dice = float(np.mean(per_case)) if per_case else -train_loss
            logger.info("epoch %d loss %.4f val dice %.4f %s", epoch, train_loss, val_dice, per_case)
            improved, best = val_dice >= best, max(best, val_dice)
            checkpoint = {"state_dict": model.state_dict(), "config": config, "config_path": str(config_path),
                          "epoch": epoch, "val_dice": val_dice, "best_val_dice": best,
                          "elapsed_s": schedule.elapsed_s, "optimiser": optimiser.state_dict(),
                          "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state()}}
            # best before last, each replaced whole: an interrupted run resumes from a readable last.pt
            # and never takes a best.pt older than the best it records
            if improved:
                save_atomic(checkpoint, best_path)
            save_atomic(checkpoint, out_dir / "last.pt")
            writer.writerow([epoch, f"{train_loss:.4f}", f"{val_dice:.4f}", *[f"{d:.4f}" for d in per_case],
                             f"{schedule.elapsed_s:.0f}"])
            handle.flush()
            if schedule.finished:
                logger.info("time budget reached after epoch %d", epoch)
                break
    return best_path


FRESH_RUN: dict[str, Any] = {"epoch": 0, "best": -1.0, "elapsed_s": 0.0}
"""Where a run without a ``last.pt`` (or started again on purpose) begins."""

RESUMABLE_CHANGES = frozenset({"epochs", "max_minutes"})
"""Config keys a resumed run may change: its epoch limit and its time budget (to extend it)."""


def _resume(last: Path, config: dict[str, Any], model: torch.nn.Module, optimiser: torch.optim.Optimizer,
            generator: torch.Generator) -> dict[str, Any]:
    """Continue from ``last`` when an earlier, interrupted invocation of this run left one.

    Returns the epoch reached (0 for a fresh run), the best val Dice so far and the training
    seconds already spent (the time-based schedule continues from there).

    Raises:
        TrainConfigError: ``last`` was written by a run with another config (``epochs`` and
            ``max_minutes`` aside).
    """
    if not last.is_file():
        return dict(FRESH_RUN)
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    saved = checkpoint.get("config") or {}
    changed = sorted(key for key in set(config) | set(saved)
                     if key not in RESUMABLE_CHANGES and config.get(key) != saved.get(key))
    if changed:
        raise TrainConfigError(f"{last} was written with another config ({', '.join(changed)} differ): resume "
                               "with the same config, or give this run its own out_dir")
    if "optimiser" not in checkpoint:
        raise TrainConfigError(f"{last} predates resumable CT training: delete it to start the run again")
    model.load_state_dict(checkpoint["state_dict"])
    optimiser.load_state_dict(checkpoint["optimiser"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    generator.set_state(checkpoint["rng"]["generator"])
    logger.info("resuming %s after epoch %d (%.1f s of training spent)", last, checkpoint["epoch"],
                checkpoint["elapsed_s"])
    return {"epoch": int(checkpoint["epoch"]), "best": float(checkpoint["best_val_dice"]),
            "elapsed_s": float(checkpoint["elapsed_s"])}


def _train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimiser: torch.optim.Optimizer,
    schedule: TimeCosineSchedule,
    loss_fn: torch.nn.Module,
    generator: torch.Generator,
    consolidation: float = 0.0,
) -> float:
    model.train()
    losses = []
    for image, target in loader:
        if schedule.finished:
            break
        schedule.step()
        image, target = augment_batch(image, target, generator, consolidation)
        loss = loss_fn(model(image), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")
