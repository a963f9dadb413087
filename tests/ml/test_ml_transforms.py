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
