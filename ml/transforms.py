"""Batch augmentation for 2-D segmentation, on torch tensors (CPU or GPU).

Working on whole batches keeps the cost per image tiny on CPU (one ``grid_sample`` per batch).
Geometric transforms are applied identically to images (bilinear) and labels (nearest).
A horizontal flip mirrors the image, so the patient's right lung moves to the other side of the
picture: label 1 (right lung) and label 2 (left lung) are swapped, see :func:`hflip_labels`.
Optionally, opacities are painted into the lungs at their border (labels unchanged), so that
consolidation, effusion or dense bases are not taken for the diaphragm or the heart
(``p_opacity``; the same blobs serve the CT consolidation augmentation, :mod:`ml.ct.augment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

RIGHT_LUNG = 1
LEFT_LUNG = 2


def swap_lr(labels: torch.Tensor) -> torch.Tensor:
    """Swap right-lung (1) and left-lung (2) labels; other values unchanged."""
    out = labels.clone()
    out[labels == RIGHT_LUNG] = LEFT_LUNG
    out[labels == LEFT_LUNG] = RIGHT_LUNG
    return out


def hflip_labels(labels: torch.Tensor) -> torch.Tensor:
    """Mirror a label map (..., H, W) left-right AND swap right/left lung labels."""
    return swap_lr(torch.flip(labels, dims=[-1]))


def hflip_probs(probs: torch.Tensor) -> torch.Tensor:
    """Mirror class scores (B, C, H, W) left-right and swap the right/left lung channels."""
    flipped = torch.flip(probs, dims=[-1])
    order = list(range(flipped.shape[1]))
    if flipped.shape[1] > LEFT_LUNG:
        order[RIGHT_LUNG], order[LEFT_LUNG] = LEFT_LUNG, RIGHT_LUNG
    return flipped[:, order]


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation (all switchable with p = 0)."""

    p_affine: float = 0.8
    rotate_deg: float = 12.0
    translate: float = 0.08
    scale_min: float = 0.8
    scale_max: float = 1.15
    aspect: float = 0.12
    p_flip: float = 0.0
    p_intensity: float = 0.8
    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.35
    p_noise: float = 0.25
    noise_std: float = 0.03
    p_blur: float = 0.2
    blur_sigma_max: float = 1.5
    p_opacity: float = 0.0
    opacity_level: tuple[float, float] = (0.55, 0.9)
    opacity_alpha: tuple[float, float] = (0.4, 0.9)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AugmentConfig:
        """Build from a config mapping; unknown keys raise ``ValueError``."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown augmentation option(s): {sorted(unknown)}")
        return cls(**values)


def lung_border(lung: torch.Tensor) -> torch.Tensor:
    """Lung pixels with a non-lung 8-neighbour, for boolean ``(B, H, W)`` masks."""
    outside = (~lung).float()[:, None]
    return lung & (F.max_pool2d(outside, 3, stride=1, padding=1)[:, 0] > 0)


def ragged_blob(
    border: torch.Tensor, generator: torch.Generator, radius_range: tuple[float, float] = (0.04, 0.2)
) -> torch.Tensor | None:
    """A random ellipse with a ragged edge centred on a random ``border`` pixel.

    Args:
        border: ``(S, S)`` boolean candidate centres.
        generator: random source (draws: centre, two semi-axes, angle, 8×8 edge noise).
        radius_range: semi-axes as fractions of the side ``S``.

    Returns:
        ``(S, S)`` boolean blob, or ``None`` when ``border`` is empty.
    """
    size = border.shape[-1]
    candidates = torch.nonzero(border.flatten()).flatten()
    if candidates.numel() == 0:
        return None
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    centre = int(candidates[int(rand(1) * candidates.numel()) % candidates.numel()])
    cy, cx = divmod(centre, size)
    low, high = radius_range
    ry, rx = (size * (low + (high - low) * rand(2))).tolist()
    angle = float(rand(1)) * math.pi
    cos, sin = math.cos(angle), math.sin(angle)
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    u = ((xx - cx) * cos + (yy - cy) * sin) / rx
    v = (-(xx - cx) * sin + (yy - cy) * cos) / ry
    ragged = F.interpolate(torch.randn(1, 1, 8, 8, generator=generator), size=(size, size), mode="bilinear",
                           align_corners=False)[0, 0]
    return (u**2 + v**2 + 0.35 * ragged) <= 1.0


def soft_inside(blob: torch.Tensor, lung: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """A ``(S, S)`` blob with an edge ramp ``kernel // 2`` pixels wide (box filter), kept inside ``lung``."""
    return F.avg_pool2d(blob.float()[None, None], kernel, stride=1, padding=kernel // 2)[0, 0] * lung


def _affine_matrices(batch: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) sampling matrices for ``affine_grid`` (output → input coordinates)."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180.0
    scale = uniform(cfg.scale_min, cfg.scale_max)
    aspect = uniform(-cfg.aspect, cfg.aspect).exp()
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    tx, ty = uniform(-cfg.translate, cfg.translate) * 2, uniform(-cfg.translate, cfg.translate) * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos / sx, -sin / sx, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin / sy, cos / sy, ty
    active = torch.rand(batch, generator=generator) < cfg.p_affine
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    theta[~active] = identity
    return theta


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image (B, 1, H, W) with its own sigma (B,) via separable kernels."""
    radius = 4
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    out = torch.empty_like(images)
    for i in range(images.shape[0]):
        k = torch.exp(-(x**2) / (2 * float(sigma[i]) ** 2))
        k = k / k.sum()
        img = F.pad(images[i : i + 1], (radius, radius, radius, radius), mode="replicate")
        img = F.conv2d(img, k.view(1, 1, 1, -1))
        out[i : i + 1] = F.conv2d(img, k.view(1, 1, -1, 1))
    return out


class BatchAugment:
    """Random augmentation of an (images (B, 1, H, W) in [0, 1], labels (B, H, W)) batch."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)

    def geometric(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation, translation, (anisotropic) scaling and the label-swapping flip."""
        b = images.shape[0]
        flip = self._rand(b) < self.cfg.p_flip
        if flip.any():
            images = images.clone()
            labels = labels.clone()
            images[flip] = torch.flip(images[flip], dims=[-1])
            labels[flip] = hflip_labels(labels[flip])
        if self.cfg.p_affine <= 0:
            return images, labels
        theta = _affine_matrices(b, self.cfg, self.generator).to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        lab = F.grid_sample(labels[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return images, lab[:, 0].round().to(labels.dtype)

    def intensity(self, images: torch.Tensor) -> torch.Tensor:
        """Gamma, contrast, brightness, blur and Gaussian noise; output clipped to [0, 1]."""
        cfg, b = self.cfg, images.shape[0]
        view = (b, 1, 1, 1)
        active = (self._rand(b) < cfg.p_intensity).view(view).to(images.dtype)
        gamma = torch.exp((self._rand(b) * 2 - 1) * cfg.gamma).view(view).to(images)
        contrast = (1 + (self._rand(b) * 2 - 1) * cfg.contrast).view(view).to(images)
        bright = ((self._rand(b) * 2 - 1) * cfg.brightness).view(view).to(images)
        changed = images.clamp(0, 1) ** gamma
        mean = changed.mean(dim=(2, 3), keepdim=True)
        changed = (changed - mean) * contrast + mean + bright
        images = active * changed + (1 - active) * images
        blur = self._rand(b) < cfg.p_blur
        if blur.any():
            sigma = 0.5 + self._rand(int(blur.sum())) * (cfg.blur_sigma_max - 0.5)
            images = images.clone()
            images[blur] = _gaussian_blur(images[blur], sigma)
        noise = (self._rand(b) < cfg.p_noise).view(view).to(images)
        std = (self._rand(b) * cfg.noise_std).view(view).to(images)
        gen_noise = torch.randn(images.shape, generator=self.generator).to(images)
        images = images + noise * std * gen_noise
        return images.clamp(0.0, 1.0)

    def opacity(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Opacities blended into the lungs at their border (consolidation, effusion); labels unchanged."""
        cfg, b = self.cfg, images.shape[0]
        if cfg.p_opacity <= 0:
            return images
        lung = labels > 0
        chosen = (self._rand(b) < cfg.p_opacity) & (lung.flatten(1).sum(1) >= 0.006 * lung[0].numel())
        if not chosen.any():
            return images
        images = images.clone()
        border = lung_border(lung)
        size = images.shape[-1]
        for i in torch.nonzero(chosen).flatten().tolist():
            blob = ragged_blob(border[i], self.generator)
            if blob is None:
                continue
            # a wide edge ramp: opacities fade out, they are rarely sharp-edged on a radiograph
            soft = soft_inside(blob & lung[i], lung[i], kernel=2 * (size // 40) + 1).to(images)
            level = cfg.opacity_level[0] + (cfg.opacity_level[1] - cfg.opacity_level[0]) * float(self._rand(1))
            alpha = cfg.opacity_alpha[0] + (cfg.opacity_alpha[1] - cfg.opacity_alpha[0]) * float(self._rand(1))
            texture = F.interpolate(torch.randn(1, 1, size // 8, size // 8, generator=self.generator),
                                    size=images.shape[-2:], mode="bilinear", align_corners=False)[0, 0] * 0.03
            weight = alpha * soft
            images[i, 0] = images[i, 0] * (1.0 - weight) + (level + texture.to(images)) * weight
        return images

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.geometric(images, labels)
        return self.intensity(self.opacity(images, labels)), labels
