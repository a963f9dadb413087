"""Trainer features on tiny synthetic data: early stopping, cosine warm-up schedule,
reduce-on-plateau, the ``max_minutes`` budget and (with a GPU) mixed precision."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ml.cxr.data import CXRSegmentationDataset, read_manifest
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


# ---------------------------------------------------------------- hard-example sampling
def _drawn(trainer: Trainer) -> list[int]:
    """Dataset indices of one epoch's draws, as the training loop receives them."""
    assert trainer._shuffle_generator is not None
    trainer._shuffle_generator.manual_seed(trainer.cfg.seed * 100_003 + trainer.epoch)
    return [int(i) for batch in trainer.train_loader for i in batch["index"]]


def test_sample_by_draws_only_weighted_images_and_keeps_the_epoch_length(synthetic_manifest: Path, tmp_path: Path) -> None:
    train, val = _data(synthetic_manifest)
    trainer = Trainer(_net(), train, val, _cfg(), tmp_path / "run", num_classes=3)
    assert sorted(_drawn(trainer)) == list(range(12))  # uniform: a permutation (drop_last keeps all 12)
    weights = [0.0] * 12
    weights[3], weights[7] = 1.0, 3.0
    trainer.sample_by(weights)
    drawn = _drawn(trainer)
    assert len(drawn) == 12 and set(drawn) <= {3, 7}
    assert drawn.count(7) > drawn.count(3)  # 3:1 odds over 12 draws; with seed 0 this holds
    assert _drawn(trainer) == drawn  # reseeded per epoch: a resumed run draws the same images


def test_sample_by_needs_a_dataset_and_case_dice_keeps_dataset_order(synthetic_manifest: Path, tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from ml.training.trainer import TrainingConfigError

    train, val = _data(synthetic_manifest)
    trainer = Trainer(_net(), DataLoader(train, batch_size=4), val, _cfg(), tmp_path / "run", num_classes=3)
    with pytest.raises(TrainingConfigError, match="not a ready DataLoader"):
        trainer.sample_by([1.0] * 12)
    with pytest.raises(TypeError, match="got a DataLoader"):
        trainer.case_dice(DataLoader(train, batch_size=4, shuffle=True))


def test_hard_examples_left_empty_means_uniform_sampling() -> None:
    from ml.cxr.train import hard_example_setting

    assert hard_example_setting({"hard_examples": None, "hard_examples_power": None}) == (0.0, 1.0)
    assert hard_example_setting({}) == (0.0, 1.0)
    assert hard_example_setting({"hard_examples": 3, "hard_examples_power": 2}) == (3.0, 2.0)


@pytest.mark.parametrize("weights, message", [
    ([1.0] * 11, r"one per training image \(12\), got 11"),
    ([1.0] * 11 + [-1.0], "non-negative"),
    ([0.0] * 12, "not all zero"),
    ([1.0] * 11 + [float("nan")], "finite"),
])
def test_sample_by_refuses_weights_that_do_not_fit(synthetic_manifest: Path, tmp_path: Path, weights: list[float],
                                                   message: str) -> None:
    from ml.training.trainer import TrainingConfigError

    train, val = _data(synthetic_manifest)
    trainer = Trainer(_net(), train, val, _cfg(), tmp_path / "run", num_classes=3)
    with pytest.raises(TrainingConfigError, match=message):
        trainer.sample_by(weights)


def test_hard_example_weights_follow_the_starting_models_dice_deficit(synthetic_manifest: Path, tmp_path: Path) -> None:
    from ml.cxr.train import hard_example_weights
    from ml.training.trainer import TrainingConfigError, per_case_dice

    train, val = _data(synthetic_manifest)
    trainer = Trainer(_net(), train, val, _cfg(), tmp_path / "run", num_classes=3)
    path = tmp_path / "hard_examples.csv"
    start = {"init_from": "start.pt", "init_sha256": "abc", "size": 32, "low_pct": 0.5, "high_pct": 99.5}
    weights = hard_example_weights(trainer, train, 2.0, path, measured_with=start)
    # The Dice it used is the model's own on the unaugmented images, computed independently here.
    with torch.no_grad():
        images = torch.stack([train[i]["image"] for i in range(len(train))])
        labels = torch.stack([train[i]["label"] for i in range(len(train))])
        dice = per_case_dice(trainer.model.eval()(images).argmax(1), labels, 3).mean(1).double().numpy()
    deficit = 1.0 - dice
    assert deficit.std() > 0  # the random network segments the images unequally
    assert weights == pytest.approx(1.0 + 2.0 * deficit / deficit.mean(), rel=1e-5)
    assert weights.mean() == pytest.approx(3.0)  # 1 + strength on average
    assert int(weights.argmax()) == int(dice.argmin())  # the worst image is drawn most
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == [f"synth/c{i}" for i in range(12)]
    # Power 2 leans harder on the worst images: weights follow the squared deficit.
    squared = hard_example_weights(trainer, train, 2.0, tmp_path / "squared.csv", power=2.0, measured_with=start)
    assert squared == pytest.approx(1.0 + 2.0 * deficit**2 / (deficit**2).mean(), rel=1e-5)
    assert squared.max() / squared.mean() > weights.max() / weights.mean()

    # A resumed run reads the Dice back instead of scoring its (by then trained) model: the same
    # weights to the last bit, so it draws as the unbroken run; a new strength applies to them.
    torch.nn.init.zeros_(next(trainer.model.parameters()))
    assert np.array_equal(hard_example_weights(trainer, train, 2.0, path, resuming=True, measured_with=start), weights)
    stronger = hard_example_weights(trainer, train, 5.0, path, resuming=True, measured_with=start)
    assert stronger == pytest.approx(1.0 + 5.0 * (weights - 1.0) / 2.0, rel=1e-6)
    # Measured with another starting model or preprocessing, or for other cases: refused.
    with pytest.raises(TrainingConfigError, match="was measured with"):
        hard_example_weights(trainer, train, 2.0, path, resuming=True, measured_with={**start, "init_sha256": "def"})
    fewer = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["train"])[:6], size=32)
    with pytest.raises(TrainingConfigError, match="lists other training cases"):
        hard_example_weights(trainer, fewer, 2.0, path, resuming=True, measured_with=start)
    with pytest.raises(TrainingConfigError, match="is missing: this run resumes from last.pt"):
        hard_example_weights(trainer, train, 2.0, tmp_path / "none.csv", resuming=True, measured_with=start)
    # A fresh run measures again (here: the changed model).
    assert not np.array_equal(hard_example_weights(trainer, train, 2.0, path, measured_with=start), weights)


@pytest.mark.parametrize("key, value, message", [
    ("hard_examples", -1, "data.hard_examples must be a number >= 0"),
    ("hard_examples", "many", "data.hard_examples must be a number >= 0"),
    ("hard_examples", float("inf"), "data.hard_examples must be a number >= 0"),
    ("hard_examples_power", 0.5, "data.hard_examples_power must be a number >= 1"),
    ("hard_examples", True, "data.hard_examples must be a number >= 0"),
])
def test_a_bad_hard_examples_setting_is_refused_before_the_run_folder_exists(
        synthetic_manifest: Path, tmp_path: Path, key: str, value: object, message: str) -> None:
    import yaml

    from ml.cxr.train import train_from_config
    from ml.training.trainer import TrainingConfigError

    config = tmp_path / "hard.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hard", "modality": "cxr", "output_dir": str(tmp_path / "run"),
        "data": {"manifest": str(synthetic_manifest), "size": 32, "hard_examples": 2, key: value},
        "model": {"architecture": "unet", "network_kwargs": {"channels": [4, 8], "strides": [2]}},
        "train": {"epochs": 1, "batch_size": 4, "progress": False, "num_threads": 1},
    }))
    with pytest.raises(TrainingConfigError, match=message):
        train_from_config(config)
    assert not (tmp_path / "run").exists()


def test_a_resumed_hard_example_run_continues_the_unbroken_one(synthetic_manifest: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the config: the sampler is installed, and a run broken after one epoch ends with the
    unbroken run's weights (it draws the images the starting model found hard, not the ones its
    own partly trained network finds hard; constant learning rate, as in test_ml_training)."""
    import yaml
    from torch.utils.data import WeightedRandomSampler

    from ml.networks import build_network
    from ml.cxr.train import train_from_config

    kwargs = {"channels": [4, 8], "strides": [2]}
    torch.manual_seed(5)
    torch.save(build_network("unet", 1, 3, **kwargs).state_dict(), tmp_path / "start.pt")
    samplers: list[object] = []
    original = Trainer.sample_by

    def spy(self: Trainer, weights: object) -> None:
        original(self, weights)
        samplers.append(self.train_loader.sampler)

    monkeypatch.setattr(Trainer, "sample_by", spy)

    def run(folder: str, epochs: int) -> dict[str, torch.Tensor]:
        config = tmp_path / f"{folder}.yaml"
        config.write_text(yaml.safe_dump({
            "name": folder, "modality": "cxr", "output_dir": str(tmp_path / folder),
            "data": {"manifest": str(synthetic_manifest), "size": 32, "hard_examples": 4, "hard_examples_power": 2},
            "model": {"architecture": "unet", "init_from": str(tmp_path / "start.pt"), "network_kwargs": kwargs},
            "train": {"epochs": epochs, "batch_size": 4, "lr": 1e-2, "scheduler": "none", "progress": False,
                      "num_threads": 1, "device": "cpu", "amp": False, "seed": 3, "early_stopping_patience": 100},
        }))
        train_from_config(config)
        return torch.load(tmp_path / folder / "last.pt", weights_only=False)["model"]

    straight = run("straight", 3)
    assert len(samplers) == 1 and isinstance(samplers[0], WeightedRandomSampler)
    run("broken", 1)
    measured = (tmp_path / "broken" / "hard_examples.csv").read_text()
    resumed = run("broken", 3)
    assert (tmp_path / "broken" / "hard_examples.csv").read_text() == measured
    assert measured == (tmp_path / "straight" / "hard_examples.csv").read_text()
    for key, value in straight.items():
        assert torch.allclose(value, resumed[key], atol=1e-6), key
