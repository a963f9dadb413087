"""Trainer features on tiny synthetic data: early stopping, cosine warm-up schedule,
reduce-on-plateau, the ``max_minutes`` budget and (with a GPU) mixed precision."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ml.data import CXRSegmentationDataset, read_manifest
from ml.networks import build_network
from ml.training import TrainConfig, Trainer

# 12 training cases at batch size 4 (drop_last) -> 3 optimiser steps per epoch.
STEPS_PER_EPOCH = 3


def _data(manifest: Path) -> tuple[CXRSegmentationDataset, CXRSegmentationDataset]:
    train = CXRSegmentationDataset(read_manifest(manifest, ["train"]), size=32)
    val = CXRSegmentationDataset(read_manifest(manifest, ["val"]), size=32)
    return train, val


def _net(norm: str = "instance") -> nn.Module:
    # Instance norm keeps no running statistics, so with weights that never change the
    # validation outputs (and Dice) are exactly constant from epoch to epoch.
    torch.manual_seed(0)
    return build_network("unet", 1, 3, channels=[4, 8], strides=[2], norm=norm)


class _Frozen(nn.Module):
    """A network whose only trainable parameter has a zero gradient: the optimiser runs with a
    non-zero learning rate, yet the outputs (and the validation Dice) never change."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + 0.0 * self.dummy


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _cfg(**overrides: object) -> TrainConfig:
    values = {"epochs": 20, "batch_size": 4, "val_batch_size": 4, "progress": False, "seed": 0,
              "amp": False, "device": "cpu", "num_threads": 1}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_early_stopping_when_val_dice_cannot_improve(synthetic_manifest: Path, tmp_path: Path) -> None:
    train, val = _data(synthetic_manifest)
    cfg = _cfg(lr=0.0, weight_decay=0.0, scheduler="none", early_stopping_patience=2)
    run = tmp_path / "run"
    trainer = Trainer(_net(), train, val, cfg, run, num_classes=3)
    summary = trainer.fit()
    rows = _rows(run)
    # Epoch 1 sets the best Dice; nothing improves afterwards. The trainer checks
    # ``epoch - best_epoch > patience`` before each epoch (the same "more than patience bad
    # epochs" rule as torch's ReduceLROnPlateau), so it runs 1 + (patience + 1) = 4 epochs.
    assert summary["stop_reason"] == "early_stopping"
    assert summary["best_epoch"] == 1
    assert summary["epochs"] == 4
    assert len(rows) == 4 < cfg.epochs
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert len({r["val_dice"] for r in rows}) == 1  # the Dice really was constant
    assert trainer.best_epoch == 1 and trainer.epoch == 4
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def test_cosine_lr_formula_by_step(synthetic_manifest: Path, tmp_path: Path) -> None:
    """``Trainer._set_lr`` against hand-computed values of the formula in trainer.py:
    linear warm-up ``lr * (step + 1) / warmup_steps``, then
    ``min_lr + 0.5 (lr - min_lr)(1 + cos(pi * step / total_steps))``."""
    train, val = _data(synthetic_manifest)
    lr, min_lr = 0.01, 1e-4
    cfg = _cfg(epochs=10, lr=lr, min_lr=min_lr, warmup_epochs=1.0, scheduler="cosine")
    trainer = Trainer(_net(), train, val, cfg, tmp_path / "run", num_classes=3)
    assert len(trainer.train_loader) == STEPS_PER_EPOCH  # warm-up = 3 steps, total = 30 steps

    def lr_at(step: int) -> float:
        trainer.step = step
        return trainer._set_lr()

    # warm-up: 1/3, 2/3, 3/3 of lr
    assert lr_at(0) == pytest.approx(lr / 3)
    assert lr_at(1) == pytest.approx(2 * lr / 3)
    assert lr_at(2) == pytest.approx(lr)
    # step 3: progress 3/30 = 0.1 -> 1e-4 + 0.5 * 0.0099 * (1 + cos(0.1 pi)) = 0.0097571...
    assert lr_at(3) == pytest.approx(1e-4 + 0.5 * 0.0099 * (1 + 0.9510565163), rel=1e-9)
    assert lr_at(3) == pytest.approx(0.0097577, abs=1e-7)
    # step 15: half way -> exactly the midpoint (lr + min_lr) / 2
    assert lr_at(15) == pytest.approx(0.00505, rel=1e-9)
    # last step 29: progress 29/30 -> 1e-4 + 0.5 * 0.0099 * (1 - 0.9945218954) = 0.00012712
    assert lr_at(29) == pytest.approx(0.00012712, rel=1e-4)
    # the optimiser really carries the value
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.00012712, rel=1e-4)
    # never below min_lr, even past the end
    assert lr_at(60) == pytest.approx(min_lr)


def test_cosine_schedule_warms_up_then_decays_to_min_lr(synthetic_manifest: Path, tmp_path: Path) -> None:
    train, val = _data(synthetic_manifest)
    lr, min_lr = 0.01, 1e-4
    cfg = _cfg(epochs=6, lr=lr, min_lr=min_lr, warmup_epochs=2.0, scheduler="cosine",
               early_stopping_patience=100)
    run = tmp_path / "run"
    summary = Trainer(_net("batch"), train, val, cfg, run, num_classes=3).fit()
    assert summary["stop_reason"] == "epochs"
    lrs = [float(r["lr"]) for r in _rows(run)]
    # metrics.csv holds the LR of each epoch's last step (global steps 2, 5, 8, 11, 14, 17 of 18).
    # warm-up = 2 epochs = 6 steps: step 2 -> 3/6 lr, step 5 -> 6/6 lr.
    expected = [lr * 3 / 6, lr]
    expected += [min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * s / 18)) for s in (8, 11, 14, 17)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[1] > lrs[0]  # rises during warm-up
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))  # then decays monotonically
    # step 17 of 18: 1e-4 + 0.5 * 0.0099 * (1 - 0.98481) = 1.752e-4, i.e. within 1 % of the
    # range above min_lr (the formula reaches min_lr exactly only at progress 1)
    assert lrs[-1] == pytest.approx(1.752e-4, rel=1e-3)
    assert min_lr < lrs[-1] < min_lr + 0.01 * (lr - min_lr)


def test_plateau_halves_lr_after_patience_epochs_without_improvement(
    synthetic_manifest: Path, tmp_path: Path
) -> None:
    train, val = _data(synthetic_manifest)
    cfg = _cfg(epochs=5, lr=1e-3, scheduler="plateau", plateau_patience=1, plateau_factor=0.5,
               early_stopping_patience=100)
    run = tmp_path / "run"
    summary = Trainer(_Frozen(_net()), train, val, cfg, run, num_classes=3).fit()
    rows = _rows(run)
    assert summary["epochs"] == 5
    assert len({r["val_dice"] for r in rows}) == 1  # no improvement after epoch 1
    # ReduceLROnPlateau (mode max, patience 1): epoch 1 is the best; bad epochs 2, 3 -> the count
    # exceeds the patience at epoch 3 -> lr * 0.5; the count restarts, epoch 5 -> lr * 0.25.
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])


def test_max_minutes_stops_inside_the_first_epoch(synthetic_manifest: Path, tmp_path: Path) -> None:
    train, val = _data(synthetic_manifest)
    budget_s = 0.12

    def slow_augment(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(0.25)  # each step takes longer than the whole budget
        return images, labels

    cfg = _cfg(epochs=5, lr=1e-3, max_minutes=budget_s / 60.0, early_stopping_patience=100)
    run = tmp_path / "run"
    trainer = Trainer(_net(), train, val, cfg, run, num_classes=3, augment=slow_augment)
    summary = trainer.fit()
    # The budget is checked before every step: step 1 runs, step 2 finds the budget spent.
    assert trainer.step == 1 < STEPS_PER_EPOCH
    assert summary["stop_reason"] == "max_minutes"
    assert summary["epochs"] == 1
    rows = _rows(run)
    assert len(rows) == 1 and int(rows[0]["epoch"]) == 1
    assert math.isfinite(float(rows[0]["train_loss"])) and float(rows[0]["train_loss"]) > 0
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and state["step"] == 1 and len(state["history"]) == 1
    assert (run / "best.pt").is_file() and (run / "curve.png").is_file()


def test_a_budget_spent_before_an_epoch_starts_adds_no_empty_epoch(synthetic_manifest: Path, tmp_path: Path) -> None:
    train, val = _data(synthetic_manifest)
    cfg = _cfg(epochs=3, lr=1e-3, max_minutes=1e-9, early_stopping_patience=100)
    trainer = Trainer(_net(), train, val, cfg, tmp_path / "run", num_classes=3)
    summary = trainer.fit()
    assert summary["stop_reason"] == "max_minutes" and summary["epochs"] == 0 and trainer.step == 0
    assert not (tmp_path / "run" / "metrics.csv").is_file() or _rows(tmp_path / "run") == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for mixed precision")
def test_cuda_amp_one_epoch(synthetic_manifest: Path, tmp_path: Path) -> None:
    train, val = _data(synthetic_manifest)
    cfg = _cfg(epochs=1, lr=1e-2, amp=True, device="cuda", scheduler="cosine")
    run = tmp_path / "run"
    trainer = Trainer(_net("batch"), train, val, cfg, run, num_classes=3)
    assert trainer.use_amp and trainer.scaler.is_enabled()
    assert next(trainer.model.parameters()).device.type == "cuda"
    summary = trainer.fit()
    assert summary["epochs"] == 1 and summary["stop_reason"] == "epochs"
    row = _rows(run)[0]
    assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["val_loss"]))
    assert 0.0 <= float(row["val_dice"]) <= 1.0
    assert trainer.step == STEPS_PER_EPOCH
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert state["scaler"]  # a GradScaler state was saved for resume
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
