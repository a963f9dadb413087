"""A generic supervised segmentation trainer (2-D or 3-D), reusable with any Dataset.

Batches are either ``{"image": (B, C, ...), "label": (B, ...)}`` dicts or ``(image, label)``
tuples. The trainer writes into ``out_dir``:

* ``last.pt``  – full state (model, optimiser, scheduler, RNG, history) for ``resume``;
* ``best.pt``  – model weights with the best validation Dice;
* ``metrics.csv`` – one row per epoch; ``curve.png`` – loss and Dice curves.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from ml.losses import DiceCE
from ml.training.deep_supervision import DeepSupervision, DeepSupervisionError

logger = logging.getLogger(__name__)

BatchAugmenter = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(<path>.tmp)``, then rename: a kill mid-write leaves the old file whole."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    write(tmp)
    tmp.replace(path)


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`write_atomic`."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


class TrainingConfigError(ValueError):
    """An invalid training option."""


@dataclass
class TrainConfig:
    """Optimisation settings (see ``ml/configs/*.yaml`` ``train:`` section)."""

    epochs: int = 50
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-5
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    early_stopping_patience: int = 12
    max_minutes: float | None = None
    seed: int = 0
    num_threads: int | None = None
    num_workers: int = 0
    progress: bool = True
    amp: bool = True
    device: str | None = None
    val_batch_size: int = 32
    log_every: int = 0
    loss: dict[str, Any] = field(default_factory=dict)
    deep_supervision: list[float] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainConfig:
        """Build from a config mapping; unknown keys raise :class:`TrainingConfigError`."""
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TrainingConfigError(f"unknown train option(s): {sorted(unknown)}")
        cfg = cls(**values)
        if cfg.optimizer not in {"adam", "adamw", "sgd"}:
            raise TrainingConfigError(f"optimizer must be adam, adamw or sgd, got {cfg.optimizer!r}")
        if cfg.scheduler not in {"cosine", "plateau", "none"}:
            raise TrainingConfigError(f"scheduler must be cosine, plateau or none, got {cfg.scheduler!r}")
        return cfg


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA when available, else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    image, label = batch[0], batch[1]
    return image, label


def per_case_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice per case and foreground class from label maps.

    Args:
        pred: (B, ...) integer predictions.
        target: (B, ...) integer labels.
        num_classes: including background.

    Returns:
        (B, num_classes - 1) Dice; 1.0 where a class is absent from both.
    """
    b = pred.shape[0]
    p, t = pred.reshape(b, -1), target.reshape(b, -1)
    scores = []
    for c in range(1, max(num_classes, 2)):
        pc, tc = p == c, t == c
        inter = (pc & tc).sum(1).float()
        denom = (pc.sum(1) + tc.sum(1)).float()
        scores.append(torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom)))
    return torch.stack(scores, dim=1)


class Trainer:
    """Train a segmentation network with early stopping on validation Dice.

    Args:
        model: network mapping (B, C_in, ...) → logits (B, num_classes, ...).
        train_data: Dataset or DataLoader of training batches.
        val_data: Dataset or DataLoader of validation batches.
        config: optimisation settings.
        out_dir: run folder for checkpoints, ``metrics.csv`` and ``curve.png``.
        num_classes: classes including background (1 means binary with sigmoid).
        augment: optional batch augmentation ``(images, labels) -> (images, labels)``.
        extra_state: JSON-able run description stored inside the checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset | DataLoader,
        val_data: Dataset | DataLoader,
        config: TrainConfig,
        out_dir: Path,
        num_classes: int,
        augment: BatchAugmenter | None = None,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        seed_everything(config.seed)
        self.device = select_device(config.device)
        self.model = model.to(self.device)
        self.num_classes = num_classes
        self.augment = augment
        self.extra_state = extra_state or {}
        self._shuffle_generator: torch.Generator | None = None
        self._given_loader = isinstance(train_data, DataLoader)
        self.train_loader = self._loader(train_data, config.batch_size, shuffle=True)
        self.val_loader = self._loader(val_data, config.val_batch_size, shuffle=False)
        self.loss_fn = DiceCE(**config.loss).to(self.device)
        self.deep = self._deep_supervision()
        self.optimizer = self._optimizer()
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
            )
            if config.scheduler == "plateau"
            else None
        )
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0
        self.best_dice = -1.0
        self.best_epoch = -1
        self.history: list[dict[str, float]] = []

    def _loader(self, data: Dataset | DataLoader, batch_size: int, shuffle: bool,
                weights: torch.Tensor | None = None) -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        gen = torch.Generator().manual_seed(self.cfg.seed)
        if shuffle:
            self._shuffle_generator = gen  # reseeded per epoch, so a resumed run shuffles as an unbroken one
        sampler = None if weights is None else WeightedRandomSampler(weights, len(data), replacement=True, generator=gen)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and len(data) > batch_size,
            num_workers=self.cfg.num_workers,
            generator=gen,
        )

    def sample_by(self, weights: Iterable[float]) -> None:
        """Draw each epoch's training images with replacement, in proportion to ``weights``.

        One weight per training image; an epoch keeps its length (as many draws as images).
        Raises ``TrainingConfigError`` when the weights do not fit the training data.
        """
        if self._given_loader:
            raise TrainingConfigError("sampling weights need the training data as a Dataset, not a ready DataLoader")
        data = self.train_loader.dataset
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        if w.ndim != 1 or w.numel() != len(data):
            raise TrainingConfigError(f"sampling weights: need one per training image ({len(data)}), got {w.numel()}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise TrainingConfigError("sampling weights must be finite, non-negative and not all zero")
        self.train_loader = self._loader(data, self.cfg.batch_size, shuffle=True, weights=w)

    def _augment_generator(self) -> torch.Generator | None:
        """The augmentation's random source when it has one (saved in ``last.pt`` for resume)."""
        generator = getattr(self.augment, "generator", None)
        return generator if isinstance(generator, torch.Generator) else None

    def _deep_supervision(self) -> DeepSupervision | None:
        """Auxiliary decoder heads when ``deep_supervision`` weights are configured."""
        if not self.cfg.deep_supervision:
            return None
        try:
            return DeepSupervision(self.model, self.num_classes, self.cfg.deep_supervision).to(self.device)
        except DeepSupervisionError as error:
            raise TrainingConfigError(str(error)) from error

    def _optimizer(self) -> torch.optim.Optimizer:
        params = list(self.model.parameters()) + (list(self.deep.parameters()) if self.deep else [])
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    # ----------------------------------------------------------------- schedule
    def _progress(self) -> float:
        """Training progress in [0, 1]: the larger of step fraction and time fraction."""
        total_steps = max(1, self.cfg.epochs * len(self.train_loader))
        frac = self.step / total_steps
        if self.cfg.max_minutes:
            frac = max(frac, self.elapsed / (self.cfg.max_minutes * 60.0))
        return min(1.0, frac)

    def _cosine_lr(self) -> float:
        cfg = self.cfg
        warmup_steps = cfg.warmup_epochs * len(self.train_loader)
        if self.step < warmup_steps:
            return cfg.lr * (self.step + 1) / warmup_steps
        p = self._progress()
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * p))

    def _set_lr(self) -> float:
        if self.cfg.scheduler == "cosine":
            lr = self._cosine_lr()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        return float(self.optimizer.param_groups[0]["lr"])

    # ----------------------------------------------------------------- loops
    def _iter(self, loader: DataLoader, desc: str) -> Iterable[Any]:
        if not self.cfg.progress:
            return loader
        from tqdm import tqdm

        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)

    def train_one_epoch(self, start_time: float, base_elapsed: float) -> float:
        """One pass over the training data; returns the mean loss."""
        self.model.train()
        total, count = 0.0, 0
        if self._shuffle_generator is not None:
            self._shuffle_generator.manual_seed(self.cfg.seed * 100_003 + self.epoch)
        for batch in self._iter(self.train_loader, f"epoch {self.epoch + 1} train"):
            images, labels = _split_batch(batch)
            images, labels = images.to(self.device), labels.to(self.device)
            if self._budget_spent(start_time, base_elapsed):
                logger.info("time budget of %.1f min reached inside epoch %d", self.cfg.max_minutes, self.epoch + 1)
                break
            if self.augment is not None:
                with torch.no_grad():
                    images, labels = self.augment(images, labels)
            self.elapsed = base_elapsed + time.monotonic() - start_time
            self._set_lr()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                logits = self.model(images)
                loss = self.deep.loss(self.loss_fn, logits, labels) if self.deep else self.loss_fn(logits, labels)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            total += float(loss.detach()) * images.shape[0]
            count += images.shape[0]
            if self.cfg.log_every and self.step % self.cfg.log_every == 0:
                seconds = time.monotonic() - start_time
                logger.info("epoch %d step %d: loss %.4f, %.1f img/s, lr %.2e", self.epoch + 1, self.step,
                            total / count, count / max(seconds, 1e-6), self.optimizer.param_groups[0]["lr"])
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss and mean per-case Dice (overall and per foreground class)."""
        losses, d = self._score(self.val_loader, "validate")
        out = {"val_loss": sum(losses) / d.shape[0], "val_dice": float(d.mean())}
        for c in range(d.shape[1]):
            out[f"val_dice_c{c + 1}"] = float(d[:, c].mean())
        return out

    @torch.no_grad()
    def case_dice(self, data: Dataset) -> torch.Tensor:
        """Per-case Dice, mean over the foreground classes, of the current model on ``data``
        (unaugmented, in dataset order)."""
        if isinstance(data, DataLoader):
            raise TypeError("case_dice scores a Dataset in its own order; got a DataLoader")
        _, d = self._score(self._loader(data, self.cfg.val_batch_size, shuffle=False), "score")
        return d.mean(1)

    def _score(self, loader: DataLoader, desc: str) -> tuple[list[float], torch.Tensor]:
        """Loss × batch size per batch, and (cases, foreground classes) Dice, over ``loader``."""
        self.model.eval()
        losses, dices = [], []
        for batch in self._iter(loader, desc):
            images, labels = _split_batch(batch)
            images, labels = images.to(self.device), labels.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                logits = self.model(images)
            if self.deep:
                self.deep.forget()
            losses.append(float(self.loss_fn(logits.float(), labels)) * images.shape[0])
            pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
            dices.append(per_case_dice(pred.cpu(), labels.cpu(), self.num_classes))
        return losses, torch.cat(dices)

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        augment_rng = self._augment_generator()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "scaler": self.scaler.state_dict(),
            "deep_supervision": self.deep.state_dict() if self.deep else None,
            "augment_rng": augment_rng.get_state() if augment_rng is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "config": asdict(self.cfg),
            "extra": self.extra_state,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def resume(self, path: Path) -> None:
        """Restore the full training state from ``last.pt``."""
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        saved = list((ckpt.get("config") or {}).get("deep_supervision") or [])
        if saved != list(self.cfg.deep_supervision):
            raise TrainingConfigError(
                f"{path} was trained with deep_supervision {saved} but the config now says "
                f"{list(self.cfg.deep_supervision)}: resume with the same setting, or start a new run folder")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.plateau and ckpt.get("plateau"):
            self.plateau.load_state_dict(ckpt["plateau"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.deep and ckpt.get("deep_supervision"):
            self.deep.load_state_dict(ckpt["deep_supervision"])
        augment_rng = self._augment_generator()
        if augment_rng is not None and ckpt.get("augment_rng") is not None:
            augment_rng.set_state(ckpt["augment_rng"])
        self.epoch, self.step, self.elapsed = ckpt["epoch"], ckpt["step"], ckpt["elapsed"]
        self.best_dice, self.best_epoch = ckpt["best_dice"], ckpt["best_epoch"]
        self.history = ckpt["history"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        logger.info("resumed from %s at epoch %d (best Dice %.4f)", path, self.epoch, self.best_dice)

    def _save(self) -> None:
        save_atomic(self.state(), self.out_dir / "last.pt")

    def _save_best(self) -> None:
        torch.save(
            {"model": self.model.state_dict(), "epoch": self.epoch, "val_dice": self.best_dice, "extra": self.extra_state},
            self.out_dir / "best.pt",
        )

    def _write_metrics(self) -> None:
        if not self.history:
            return
        keys = list(self.history[0].keys())
        with (self.out_dir / "metrics.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        plot_curves(self.history, self.out_dir / "curve.png")

    # ----------------------------------------------------------------- main
    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train until ``epochs``, early stopping or ``max_minutes``; returns a summary."""
        last = self.out_dir / "last.pt"
        if resume and last.is_file():
            self.resume(last)
        stop_reason = "epochs"
        epoch_seconds = 0.0
        while self.epoch < self.cfg.epochs:
            if self._out_of_time(epoch_seconds):
                stop_reason = "max_minutes"
                break
            if self.epoch - self.best_epoch > self.cfg.early_stopping_patience and self.best_epoch >= 0:
                stop_reason = "early_stopping"
                break
            start, base, steps_before = time.monotonic(), self.elapsed, self.step
            train_loss = self.train_one_epoch(start, base)
            if self.step == steps_before:  # the budget ran out before this epoch's first step
                stop_reason = "max_minutes"
                break
            val = self.validate()
            self.epoch += 1
            epoch_seconds = time.monotonic() - start
            self.elapsed = base + epoch_seconds
            if self.plateau is not None:
                self.plateau.step(val["val_dice"])
            if val["val_dice"] > self.best_dice:
                self.best_dice, self.best_epoch = val["val_dice"], self.epoch
                self._save_best()
            row = {"epoch": self.epoch, "train_loss": train_loss, **val,
                   "lr": float(self.optimizer.param_groups[0]["lr"]),
                   "epoch_seconds": epoch_seconds, "elapsed_minutes": self.elapsed / 60.0}
            self.history.append(row)
            self._save()
            self._write_metrics()
            logger.info(
                "epoch %d: train_loss %.4f val_loss %.4f val_dice %.4f (best %.4f @ %d) lr %.2e %.0fs",
                self.epoch, train_loss, val["val_loss"], val["val_dice"], self.best_dice,
                self.best_epoch, row["lr"], epoch_seconds,
            )
        summary = {"stop_reason": stop_reason, "epochs": self.epoch, "best_epoch": self.best_epoch,
                   "best_val_dice": self.best_dice, "elapsed_minutes": self.elapsed / 60.0}
        logger.info("training finished: %s", summary)
        return summary

    def _budget_spent(self, start_time: float, base_elapsed: float) -> bool:
        """True once the wall-clock budget is used up (checked before every training step)."""
        if not self.cfg.max_minutes:
            return False
        return base_elapsed + time.monotonic() - start_time >= self.cfg.max_minutes * 60.0

    def _out_of_time(self, last_epoch_seconds: float) -> bool:
        if not self.cfg.max_minutes:
            return False
        budget = self.cfg.max_minutes * 60.0
        return self.elapsed + 0.5 * last_epoch_seconds >= budget


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Save loss and validation-Dice curves of a run as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("Dice + CE loss")
    ax1.legend()
    for key in [k for k in history[0] if k.startswith("val_dice")]:
        ax2.plot(epochs, [h[key] for h in history], label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Dice")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
