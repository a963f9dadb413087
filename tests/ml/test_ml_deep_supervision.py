"""Deep supervision: auxiliary heads on the U-Net decoder, outside the network's weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from ml.cxr.data import CXRSegmentationDataset, read_manifest
from ml.losses import DiceCE
from ml.networks import build_network
from ml.training import TrainConfig, Trainer, TrainingConfigError
from ml.training.deep_supervision import DeepSupervision, DeepSupervisionError, unet_decoder_levels


def _resunet() -> torch.nn.Module:
    return build_network("resunet", 1, 3, channels=[8, 16, 32, 64], strides=[2, 2, 2], num_res_units=1)


def test_heads_sit_on_the_decoder_levels_finest_first() -> None:
    net = _resunet()
    assert len(unet_decoder_levels(net)) == 2  # 4 levels: the top one is the output
    deep = DeepSupervision(net, 3, [0.5, 0.25])
    assert [head.in_channels for head in deep.heads] == [8, 16]
    before = set(net.state_dict())
    assert not any(key.startswith("heads") for key in before)  # shipped weights stay plain


def test_loss_is_the_normalised_weighted_sum() -> None:
    torch.manual_seed(0)
    net = _resunet()
    deep = DeepSupervision(net, 3, [0.5])
    images, labels = torch.randn(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    loss_fn = DiceCE()
    logits = net(images)
    with torch.no_grad():
        aux = torch.nn.functional.interpolate(deep.heads[0](deep._features[0]), size=(32, 32), mode="bilinear",
                                              align_corners=False)
        expected = (loss_fn(logits, labels) + 0.5 * loss_fn(aux, labels)) / 1.5
    assert deep.loss(loss_fn, logits, labels).item() == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(DeepSupervisionError, match="forward first"):
        deep.loss(loss_fn, logits, labels)  # the features were used up


def test_gradients_reach_the_heads_and_the_inner_decoder() -> None:
    net = _resunet()
    deep = DeepSupervision(net, 3, [0.5, 0.25])
    images, labels = torch.randn(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    deep.loss(DiceCE(), net(images), labels).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deep.heads.parameters())


def test_instance_norm_networks_are_supervised_too() -> None:
    """The shipped X-ray configs use instance norm, which refuses a 1x1 bottleneck."""
    net = build_network("resunet", 1, 3, channels=[8, 16, 32, 64], strides=[2, 2, 2], num_res_units=1,
                        norm="instance")
    deep = DeepSupervision(net, 3, [0.5, 0.25])
    labels = torch.randint(0, 3, (2, 32, 32))
    assert float(deep.loss(DiceCE(), net(torch.randn(2, 1, 32, 32)), labels)) > 0


def test_resuming_with_another_deep_supervision_setting_is_a_config_error(synthetic_manifest: Path,
                                                                          tmp_path: Path) -> None:
    train = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["train"]), size=32)
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False, deep_supervision=[0.5])
    Trainer(_resunet(), train, train, cfg, tmp_path / "run", num_classes=3).fit()
    cfg = TrainConfig(epochs=2, batch_size=4, progress=False)
    with pytest.raises(TrainingConfigError, match="deep_supervision \\[0.5\\] but the config now says \\[\\]"):
        Trainer(_resunet(), train, train, cfg, tmp_path / "run", num_classes=3).fit()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(DeepSupervisionError, match="1 to 2 weights"):
        DeepSupervision(_resunet(), 3, [0.5, 0.25, 0.125])
    with pytest.raises(DeepSupervisionError, match="> 0"):
        DeepSupervision(_resunet(), 3, [0.0])
    attention = build_network("attention_unet", 1, 3, channels=[8, 16, 32], strides=[2, 2])
    with pytest.raises(DeepSupervisionError, match="not a MONAI UNet"):
        DeepSupervision(attention, 3, [0.5])


def test_training_with_deep_supervision_learns_and_resumes(synthetic_manifest: Path, tmp_path: Path) -> None:
    train = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["train"]), size=32)
    val = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["val"]), size=32)
    cfg = TrainConfig(epochs=6, batch_size=4, lr=2e-2, warmup_epochs=0.5, progress=False, seed=0,
                      early_stopping_patience=100, deep_supervision=[0.5, 0.25])
    summary = Trainer(_resunet(), train, val, cfg, tmp_path / "run", num_classes=3).fit()
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    assert summary["best_val_dice"] > 0.5
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert not any(key.startswith("heads") for key in best["model"])  # loads into the plain network
    _resunet().load_state_dict(best["model"])
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert set(last["deep_supervision"]) == {"heads.0.weight", "heads.0.bias", "heads.1.weight", "heads.1.bias"}
    cfg.epochs = 7
    Trainer(_resunet(), train, val, cfg, tmp_path / "run", num_classes=3).fit()
    assert len(list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))) == 7


def test_a_network_without_decoder_levels_is_a_config_error(synthetic_manifest: Path, tmp_path: Path) -> None:
    train = CXRSegmentationDataset(read_manifest(synthetic_manifest, ["train"]), size=32)
    cfg = TrainConfig(epochs=1, progress=False, deep_supervision=[0.5])
    attention = build_network("attention_unet", 1, 3, channels=[8, 16, 32], strides=[2, 2])
    with pytest.raises(TrainingConfigError, match="not a MONAI UNet"):
        Trainer(attention, train, train, cfg, tmp_path / "run", num_classes=3)
