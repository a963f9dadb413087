"""Batch augmentation for 2D CT slices (torch, CPU): geometry, intensity, resolution.

Data are scarce (a handful of labelled volumes), so augmentation is strong: random rotation,
scaling, shear, translation and left-right flips (the network predicts lung vs background, so a
flip does not confuse sides), HU window shifts, noise, blur and low-resolution simulation (for
the 3–4 mm in-plane cases). Optionally, synthetic consolidation: soft-tissue blobs painted into
the lung at its border, still labelled lung, so that collapsed or consolidated lung next to a
tumour is not taken for chest wall or mediastinum (``consolidation`` in the training config).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ml.ct.preprocessing import HU_WINDOW
from ml.transforms import lung_border, ragged_blob, soft_inside


def random_affine(
    image: torch.Tensor, target: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine warp of a batch.

    Args:
        image: ``(B, C, S, S)`` float32.
        target: ``(B, 1, S, S)`` int64 labels.
        generator: random source.

    Returns:
        Warped ``(image, target)``; outside the image is filled with air (-1) / background.
    """
    batch = image.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    angle = (rand(batch) - 0.5) * 2 * math.radians(15)
    scale = 0.8 + 0.4 * rand(batch)
    aspect = 0.9 + 0.2 * rand(batch)
    shear = (rand(batch) - 0.5) * 0.2
    flip = torch.where(rand(batch) < 0.5, -1.0, 1.0)
    shift = (rand(batch, 2) - 0.5) * 0.2
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = cos / scale * flip
    theta[:, 0, 1] = (-sin + shear) / scale
    theta[:, 1, 0] = sin / (scale * aspect) * flip
    theta[:, 1, 1] = cos / (scale * aspect)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
    labels = F.grid_sample(target.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped, (labels > 0.5).long()


def random_intensity(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Window shift/scale, gaussian noise and occasional blur or low resolution, per sample."""
    batch = image.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    gain = (0.85 + 0.3 * rand(batch, 1, 1, 1))
    offset = (rand(batch, 1, 1, 1) - 0.5) * 0.2
    image = image * gain + offset
    noise = torch.randn(image.shape, generator=generator) * (0.06 * rand(batch, 1, 1, 1))
    image = image + noise
    size = image.shape[-1]
    low_res = rand(batch) < 0.3
    if low_res.any():
        factor = int(2 + 2 * float(rand(1)))
        small = F.interpolate(image[low_res], scale_factor=1.0 / factor, mode="area")
        image[low_res] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    blur = rand(batch) < 0.2
    if blur.any():
        image[blur] = F.avg_pool2d(image[blur], kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return image


def _to_model_scale(hu: torch.Tensor) -> torch.Tensor:
    low, high = HU_WINDOW
    return (hu - low) * (2.0 / (high - low)) - 1.0


def random_consolidation(
    image: torch.Tensor,
    target: torch.Tensor,
    generator: torch.Generator,
    probability: float,
    hu_range: tuple[float, float] = (-150.0, 60.0),
    radius_range: tuple[float, float] = (0.04, 0.2),
    min_lung_pixels: int = 400,
) -> torch.Tensor:
    """Paint soft-tissue blobs into the lung at its border; the labels stay lung.

    For each sample chosen with ``probability`` (and with enough lung): an ellipse with a
    ragged edge (low-frequency noise on its level set) is centred on a random lung border
    pixel, clipped to the lung, and filled with a soft-tissue value from ``hu_range`` plus
    texture, the same in every context channel. This mimics collapsed or consolidated lung
    (atelectasis behind a tumour, pneumonia, effusion-compressed bases), which manual
    references count as lung.

    Args:
        image: ``(B, C, S, S)`` windowed images in [-1, 1] (modified copy returned).
        target: ``(B, 1, S, S)`` int64 labels (1 = lung), unchanged.
        generator: random source.
        probability: chance per sample.
        hu_range: tissue HU range of the blob.
        radius_range: ellipse semi-axes as fractions of the image side.
        min_lung_pixels: samples with less lung are left alone.

    Returns:
        The augmented images.
    """
    if probability <= 0.0:
        return image
    batch, _, size, _ = image.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    lung = target[:, 0] > 0
    chosen = (rand(batch) < probability) & (lung.flatten(1).sum(1) >= min_lung_pixels)
    if not chosen.any():
        return image
    image = image.clone()
    border = lung_border(lung)
    for b in torch.nonzero(chosen).flatten().tolist():
        blob = ragged_blob(border[b], generator, radius_range)
        if blob is None or not (blob & lung[b]).any():
            continue
        # partial-volume edge inside the lung; the chest wall and mediastinum are left as they are
        soft = soft_inside(blob & lung[b], lung[b])
        hu = hu_range[0] + (hu_range[1] - hu_range[0]) * float(rand(1))
        texture = F.interpolate(torch.randn(1, 1, size // 4, size // 4, generator=generator), size=(size, size),
                                mode="bilinear", align_corners=False)[0, 0] * 25.0
        value = _to_model_scale(hu + texture)
        image[b] = image[b] * (1.0 - soft) + value * soft
    return image


def augment_batch(
    image: torch.Tensor, target: torch.Tensor, generator: torch.Generator, consolidation: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometric, optional consolidation, then intensity augmentation of ``(B, C, S, S)`` images
    and ``(B, 1, S, S)`` labels (``consolidation``: chance per sample, see :func:`random_consolidation`)."""
    image, target = random_affine(image, target, generator)
    image = random_consolidation(image, target, generator, consolidation)
    return random_intensity(image, generator), target
