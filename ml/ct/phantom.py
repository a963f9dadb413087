"""A synthetic chest CT phantom with known lung volumes (tests and benchmarks).

Body: elliptic cylinder of soft tissue (40 HU). Lungs: two ellipsoids of parenchyma (−850 HU)
with a few vessels (40 HU) inside. Airway: a trachea (−1000 HU) running down the midline from
the top of the volume to a carina, then two main bronchi reaching each lung. Outside: air.
The arrays are canonical ``(D, H, W)`` (W toward the patient's left, so the right lung sits at
low W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Phantom:
    """A phantom volume and its truth.

    Attributes:
        volume_hu: ``(D, H, W)`` int16 HU.
        labels: ``(D, H, W)`` uint8, 1 right lung, 2 left lung (vessels included, airway not).
        spacing: ``(D, H, W)`` mm.
        volume_right_ml: right lung volume in mL (voxel count × voxel volume).
        volume_left_ml: left lung volume in mL.
    """

    volume_hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    volume_right_ml: float
    volume_left_ml: float


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _tube(grid: tuple[np.ndarray, ...], start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """Voxels within ``radius`` mm of the segment ``start``–``end`` (points in mm)."""
    axis = end - start
    length2 = float(axis @ axis)
    rel = [g - s for g, s in zip(grid, start)]
    t = np.clip(sum(r * a for r, a in zip(rel, axis)) / length2, 0.0, 1.0)
    return sum((r - t * a) ** 2 for r, a in zip(rel, axis)) <= radius**2


def make_phantom(
    shape: tuple[int, int, int] = (96, 128, 128),
    spacing: tuple[float, float, float] = (3.0, 2.5, 2.5),
    seed: int = 0,
    noise_hu: float = 20.0,
) -> Phantom:
    """Build a phantom; sizes scale with the field of view ``shape × spacing``.

    Args:
        shape: ``(D, H, W)`` voxels.
        spacing: ``(D, H, W)`` mm.
        seed: noise seed.
        noise_hu: standard deviation of gaussian noise in HU.
    """
    depth, height, width = (n * s for n, s in zip(shape, spacing))
    z = (np.arange(shape[0], dtype=np.float32) * spacing[0])[:, None, None]
    y = (np.arange(shape[1], dtype=np.float32) * spacing[1])[None, :, None]
    x = (np.arange(shape[2], dtype=np.float32) * spacing[2])[None, None, :]
    grid = (z, y, x)
    body = np.broadcast_to(((y - height / 2) / (0.36 * height)) ** 2 + ((x - width / 2) / (0.45 * width)) ** 2 <= 1.0,
                           shape)
    lung_radii = (0.3 * depth, 0.22 * height, 0.14 * width)
    lung_z = 0.45 * depth
    right = _ellipsoid(grid, (lung_z, height / 2, 0.31 * width), lung_radii)
    left = _ellipsoid(grid, (lung_z, height / 2, 0.69 * width), lung_radii)
    carina = np.array([lung_z + 0.12 * depth, 0.45 * height, width / 2])
    top = np.array([depth, 0.45 * height, width / 2])
    airway_radius = 7.0
    airway = _tube(grid, top, carina, airway_radius)
    for side_x in (0.36 * width, 0.64 * width):
        airway |= _tube(grid, carina, np.array([lung_z + 0.05 * depth, 0.47 * height, side_x]), 5.0)
    volume = np.full(shape, -1000.0, dtype=np.float32)
    volume[body] = 40.0
    volume[right | left] = -850.0
    rng = np.random.default_rng(seed)
    for lung_x in (0.31 * width, 0.69 * width):
        for _ in range(4):
            centre = (lung_z + rng.uniform(-0.15, 0.15) * depth, height / 2 + rng.uniform(-0.1, 0.1) * height,
                      lung_x + rng.uniform(-0.05, 0.05) * width)
            volume[_ellipsoid(grid, centre, (4.0, 4.0, 4.0)) & (right | left)] = 40.0
    volume[airway & body] = -1000.0
    volume += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[right & ~airway] = 1
    labels[left & ~airway] = 2
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return Phantom(
        volume_hu=np.clip(volume, -1024, 3071).astype(np.int16),
        labels=labels,
        spacing=spacing,
        volume_right_ml=float((labels == 1).sum()) * voxel_ml,
        volume_left_ml=float((labels == 2).sum()) * voxel_ml,
    )


def add_gas_below_base(
    phantom: Phantom,
    radius_mm: float,
    diaphragm_mm: float = 4.0,
    side: int = 2,
    rise_mm: float | None = None,
    seed: int = 1,
) -> tuple[Phantom, np.ndarray]:
    """Put a gas bubble (stomach fundus, colon flexure) under one lung's diaphragm dome.

    The bubble (−1000 HU) is a sphere centred under the lung's base; it pushes the dome up into
    the lung by ``rise_mm`` (default: half its radius), and a diaphragm of soft tissue
    ``diaphragm_mm`` thick (0: gas touches the lung) separates it from the lung. The lung voxels
    the dome takes become soft tissue; the lung around the dome reaches lower (a costophrenic
    recess). The truth labels lose the dome.

    Args:
        phantom: a phantom from :func:`make_phantom`.
        radius_mm: bubble radius in mm.
        diaphragm_mm: soft tissue between gas and lung in mm.
        side: 1 under the right lung, 2 under the left.
        rise_mm: how far the bubble's top rises above the lung's lowest point, in mm.
        seed: noise seed for the bubble.

    Returns:
        ``(phantom with the bubble, (D, H, W) boolean mask of the gas)``.
    """
    spacing = phantom.spacing
    lung = phantom.labels == side
    zs, ys, xs = np.nonzero(lung)
    rise = 0.5 * radius_mm if rise_mm is None else rise_mm
    base_mm = float(zs.min()) * spacing[0]
    centre = (base_mm + rise - radius_mm, float(ys.mean()) * spacing[1], float(xs.mean()) * spacing[2])
    shape = phantom.labels.shape
    grid = tuple((np.arange(n, dtype=np.float32) * s).reshape([-1 if a == i else 1 for a in range(3)])
                 for i, (n, s) in enumerate(zip(shape, spacing)))
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    gas = distance <= radius_mm
    dome = (distance <= radius_mm + diaphragm_mm) & ~gas
    volume = phantom.volume_hu.astype(np.float32)
    labels = phantom.labels.copy()
    labels[gas | dome] = 0
    volume[dome] = 40.0
    rng = np.random.default_rng(seed)
    volume[gas] = -1000.0 + rng.normal(0.0, 20.0, size=int(gas.sum()))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = Phantom(volume_hu=np.clip(volume, -1024, 3071).astype(np.int16), labels=labels, spacing=spacing,
                  volume_right_ml=float((labels == 1).sum()) * voxel_ml,
                  volume_left_ml=float((labels == 2).sum()) * voxel_ml)
    return out, gas
