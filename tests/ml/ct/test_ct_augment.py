"""CT slice augmentation: synthetic consolidation stays inside the lung and keeps the labels."""

from __future__ import annotations

import torch

from ml.ct.augment import augment_batch, random_consolidation
from ml.ct.preprocessing import HU_WINDOW

SIZE = 64


def _to_hu(value: torch.Tensor) -> torch.Tensor:
    low, high = HU_WINDOW
    return (value + 1.0) * (high - low) / 2.0 + low


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Aerated lungs (−850 HU) in soft tissue (40 HU); the last sample has no lung."""
    target = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.int64)
    target[: n - 1, :, 16:48, 8:28] = 1
    target[: n - 1, :, 16:48, 36:56] = 1
    low, high = HU_WINDOW
    tissue, air = (40.0 - low) * 2 / (high - low) - 1, (-850.0 - low) * 2 / (high - low) - 1
    image = torch.where(target.bool(), air, tissue).float().repeat(1, 3, 1, 1)
    return image, target


def test_consolidation_paints_soft_tissue_inside_the_lung_only() -> None:
    image, target = _batch()
    before_target = target.clone()
    out = random_consolidation(image, target, torch.Generator().manual_seed(1), probability=1.0)
    assert torch.equal(target, before_target)
    changed = (out - image).abs().amax(dim=1) > 1e-4  # (B, S, S)
    lung = target[:, 0].bool()
    assert changed[:-1].flatten(1).any(dim=1).all(), "every sample with lung gets a blob"
    assert not changed[-1].any(), "a slice without lung is left alone"
    assert not (changed & ~lung).any(), "nothing outside the lung changes"
    core = changed & lung
    painted = _to_hu(out[:, 1])[core]
    assert painted.max() <= 60.0 + 150.0  # tissue range plus texture
    assert painted.median() > -500.0, "the blob is dense, not air"
    # the same blob in every context channel
    assert torch.allclose(out[:, 0][core], out[:, 2][core])


def test_consolidation_off_or_on_a_small_lung_changes_nothing() -> None:
    image, target = _batch()
    assert torch.equal(random_consolidation(image, target, torch.Generator(), probability=0.0), image)
    small = torch.zeros_like(target)
    small[:, :, 30:34, 30:34] = 1
    assert torch.equal(random_consolidation(image, small, torch.Generator(), probability=1.0), image)


def test_augment_batch_keeps_shapes_and_binary_labels_with_consolidation() -> None:
    image, target = _batch(6)
    out_image, out_target = augment_batch(image, target, torch.Generator().manual_seed(0), consolidation=0.5)
    assert out_image.shape == image.shape and out_target.shape == target.shape
    assert set(out_target.unique().tolist()) <= {0, 1}
