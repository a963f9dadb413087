"""A tiny training run on synthetic images: the loss must fall, outputs and resume must work."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from ml.cxr.data import CXRSegmentationDataset, read_manifest
from ml.losses import DiceCE
from ml.networks import build_network
from ml.training import TrainConfig, Trainer, TrainingConfigError
from ml.cxr.train import train_from_config
from ml.transforms import AugmentConfig, BatchAugment


def test_dice_ce_perfect_prediction_is_near_zero() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 2:6, 1:3], labels[0, 2:6, 5:7] = 1, 2
    logits = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 20
    assert float(DiceCE()(logits, labels)) < 0.01
    assert float(DiceCE()(-logits, labels)) > 1.0


def test_loss_falls_on_synthetic_data(synthetic_manifest: Path, tmp_path: Path) -> None:
    train = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["train"]), size=32)
    val = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["val"]), size=32)
    net = build_network("unet", 1, 3, channels=[8, 16, 32], strides=[2, 2])
    cfg = TrainConfig(epochs=10, batch_size=4, lr=2e-2, warmup_epochs=0.5, progress=False, seed=0,
                      early_stopping_patience=100)
    aug = BatchAugment(AugmentConfig(p_affine=0.3, rotate_deg=5, p_flip=0.5), seed=0)
    summary = Trainer(net, train, val, cfg, tmp_path / "run", num_classes=3, augment=aug).fit()
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    dices = [float(r["val_dice"]) for r in rows]
    assert len(rows) == 10
    assert losses[-1] < 0.6 * losses[0]
    assert summary["best_val_dice"] > dices[0] + 0.1
    for name in ("best.pt", "last.pt", "curve.png"):
        assert (tmp_path / "run" / name).is_file()


def test_config_run_resumes(synthetic_manifest: Path, tmp_path: Path) -> None:
    config = {
        "name": "tiny", "modality": "cxr", "output_dir": str(tmp_path / "run"),
        "data": {"manifest": str(synthetic_manifest), "size": 32},
        "model": {"architecture": "resunet", "num_classes": 3,
                  "network_kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 1}},
        "train": {"epochs": 1, "batch_size": 4, "progress": False, "optimizer": "sgd", "scheduler": "plateau"},
        "augment": {"p_flip": 0.5},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run = train_from_config(path)
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 1
    config["train"]["epochs"] = 2
    path.write_text(yaml.safe_dump(config))
    train_from_config(path)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_bad_train_option_raises() -> None:
    with pytest.raises(TrainingConfigError):
        TrainConfig.from_dict({"optimizer": "lion"})
    with pytest.raises(TrainingConfigError):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_config_run_warm_starts_from_init_from(synthetic_manifest: Path, tmp_path: Path) -> None:
    """Stage 2 of a two-stage recipe: ``model.init_from`` loads stage 1's weights before training."""
    config = {
        "name": "tiny", "modality": "cxr", "output_dir": str(tmp_path / "stage1"),
        "data": {"manifest": str(synthetic_manifest), "size": 32},
        "model": {"architecture": "resunet", "num_classes": 3,
                  "network_kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 1}},
        "train": {"epochs": 2, "batch_size": 4, "progress": False, "lr": 0.02},
    }
    path = tmp_path / "stage1.yaml"
    path.write_text(yaml.safe_dump(config))
    stage1 = train_from_config(path)
    first_dice = float(list(csv.DictReader((stage1 / "metrics.csv").open()))[0]["val_dice"])
    config["output_dir"] = str(tmp_path / "stage2")
    config["model"]["init_from"] = str(stage1 / "best.pt")
    config["train"] = {"epochs": 1, "batch_size": 4, "progress": False, "lr": 0.0, "min_lr": 0.0,
                       "weight_decay": 0.0, "scheduler": "none"}  # lr 0: weights unchanged
    path.write_text(yaml.safe_dump(config))
    stage2 = train_from_config(path)
    best = torch.load(stage1 / "best.pt", weights_only=False)["model"]
    warm = torch.load(stage2 / "last.pt", weights_only=False)["model"]
    diffs = {k: float((best[k] - warm[k]).abs().max()) for k in best  # parameters; norm statistics still move
             if best[k].dtype.is_floating_point and "running_" not in k}
    assert max(diffs.values()) == 0.0, diffs
    assert float(list(csv.DictReader((stage2 / "metrics.csv").open()))[0]["val_dice"]) >= first_dice - 1e-6
    config["model"]["init_from"] = str(tmp_path / "missing.pt")
    config["output_dir"] = str(tmp_path / "stage3")
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(FileNotFoundError, match="init_from"):
        train_from_config(path)


def test_comparison_budget_override_writes_a_derived_config(tmp_path: Path) -> None:
    from ml.experiments.compare import with_budget

    derived = with_budget(Path("ml/configs/compare_unet.yaml"), tmp_path, max_minutes=12)
    cfg = yaml.safe_load(derived.read_text())
    original = yaml.safe_load(Path("ml/configs/compare_unet.yaml").read_text())
    assert cfg["train"]["max_minutes"] == 12.0 and cfg["output_dir"] == str(tmp_path / "runs" / "compare_unet")
    assert {k: v for k, v in cfg["train"].items() if k != "max_minutes"} == \
        {k: v for k, v in original["train"].items() if k != "max_minutes"}
    assert cfg["model"] == original["model"] and cfg["data"] == original["data"]


def test_comparison_epoch_budget_drops_the_wall_clock(tmp_path: Path) -> None:
    from ml.experiments.compare import main, with_budget

    derived = with_budget(Path("ml/configs/compare_resunet_ds.yaml"), tmp_path, epochs=15)
    cfg = yaml.safe_load(derived.read_text())
    assert cfg["train"]["epochs"] == 15 and cfg["train"]["max_minutes"] is None
    assert cfg["train"]["deep_supervision"] == [0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="exactly one"):
        with_budget(Path("ml/configs/compare_unet.yaml"), tmp_path, max_minutes=3, epochs=15)
    with pytest.raises(SystemExit):
        main(["--epochs", "3", "--max-minutes", "3"])


def test_a_resumed_run_continues_the_unbroken_one(synthetic_manifest: Path, tmp_path: Path) -> None:
    """Same shuffle and the same augmentation draws after a resume as without the break (constant
    learning rate, so that the 1-epoch first leg follows the same schedule as the unbroken run)."""
    train = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["train"]), size=32)
    val = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["val"]), size=32)

    def run(folder: str, epochs: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        net = build_network("unet", 1, 3, channels=[4, 8], strides=[2])
        cfg = TrainConfig(epochs=epochs, batch_size=4, lr=1e-2, scheduler="none", progress=False, seed=3,
                          num_threads=1, early_stopping_patience=100)
        aug = BatchAugment(AugmentConfig(p_affine=0.8, rotate_deg=10, p_flip=0.5), seed=3)
        Trainer(net, train, val, cfg, tmp_path / folder, num_classes=3, augment=aug).fit()
        return torch.load(tmp_path / folder / "last.pt", weights_only=False)["model"]

    straight = run("straight", 3)
    run("broken", 1)
    resumed = run("broken", 3)
    for key, value in straight.items():
        assert torch.allclose(value, resumed[key], atol=1e-6), key


def test_evenly_spaced_subset() -> None:
    from ml.cxr.data import evenly_spaced

    assert evenly_spaced(list(range(10)), 4) == [0, 2, 5, 7]
    assert evenly_spaced([1, 2], 5) == [1, 2]
    with pytest.raises(ValueError):
        evenly_spaced([1], 0)
