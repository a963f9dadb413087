"""Augmentation: the horizontal flip swaps right/left labels; geometry keeps labels valid."""

from __future__ import annotations

import torch

from ml.transforms import AugmentConfig, BatchAugment, hflip_labels, hflip_probs


def lungs(size: int = 32) -> torch.Tensor:
    lab = torch.zeros(size, size, dtype=torch.long)
    lab[8:24, 2:12] = 1  # patient's right lung on the image's left
    lab[8:24, 20:30] = 2
    return lab


def test_hflip_swaps_right_and_left() -> None:
    lab = lungs()
    flipped = hflip_labels(lab)
    # After mirroring, the lung on the image's left is still labelled 1 (right lung).
    assert (flipped[:, :16] == 2).sum() == 0
    assert (flipped[8:24, 2:12] == 1).all()
    assert (flipped[8:24, 20:30] == 2).all()
    assert torch.equal(hflip_labels(flipped), lab)


def test_hflip_probs_matches_label_flip() -> None:
    lab = lungs()
    probs = torch.nn.functional.one_hot(lab, 3).permute(2, 0, 1)[None].float()
    assert torch.equal(hflip_probs(probs).argmax(1)[0], hflip_labels(lab))


def test_flip_augmentation_swaps_labels() -> None:
    cfg = AugmentConfig(p_affine=0, p_flip=1.0, p_intensity=0, p_noise=0, p_blur=0)
    images = torch.zeros(2, 1, 32, 32)
    images[:, :, :, :4] = 1.0  # marker on the image's left edge
    labels = torch.stack([lungs(), lungs()])
    out_img, out_lab = BatchAugment(cfg, seed=0)(images, labels)
    assert out_img[:, :, :, -4:].min() == 1.0  # marker moved to the right edge
    assert torch.equal(out_lab[0], hflip_labels(lungs()))


def test_full_augmentation_keeps_label_values_and_range() -> None:
    cfg = AugmentConfig(p_affine=1.0, p_intensity=1.0, p_noise=1.0, p_blur=1.0)
    images = torch.rand(4, 1, 32, 32)
    labels = torch.stack([lungs()] * 4)
    out_img, out_lab = BatchAugment(cfg, seed=1)(images, labels)
    assert out_img.shape == images.shape and out_lab.shape == labels.shape
    assert out_img.min() >= 0 and out_img.max() <= 1
    assert set(out_lab.unique().tolist()) <= {0, 1, 2}
    assert (out_lab == 1).sum() > 0.5 * (labels == 1).sum()
    assert not torch.equal(out_img, images)


def test_opacity_brightens_inside_the_lungs_only_and_keeps_labels() -> None:
    cfg = AugmentConfig.from_dict({"p_affine": 0, "p_intensity": 0, "p_noise": 0, "p_blur": 0, "p_opacity": 1.0})
    size = 64
    labels = torch.zeros(4, size, size, dtype=torch.long)
    labels[:3, 16:48, 4:24] = 1
    labels[:3, 16:48, 40:60] = 2  # the last image has no lung
    images = torch.where(labels > 0, 0.2, 0.8)[:, None].float()  # dark lungs, bright tissue
    out_img, out_lab = BatchAugment(cfg, seed=3)(images, labels.clone())
    assert torch.equal(out_lab, labels)
    changed = (out_img - images).abs()[:, 0] > 1e-6
    assert not (changed & (labels == 0)).any(), "nothing outside the lungs changes"
    assert changed[:3].flatten(1).any(dim=1).all(), "every image with lungs gets an opacity"
    assert not changed[3].any()
    assert (out_img[:, 0][changed] > 0.2).all(), "an opacity is brighter than the aerated lung"
    assert out_img.min() >= 0 and out_img.max() <= 1


def test_opacity_off_by_default() -> None:
    images = torch.rand(2, 1, 32, 32)
    labels = torch.stack([lungs(), lungs()])
    assert AugmentConfig().p_opacity == 0.0
    assert torch.equal(BatchAugment(AugmentConfig(), seed=0).opacity(images, labels), images)
