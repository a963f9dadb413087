"""Gas below the diaphragm (stomach fundus, colon flexures, free air) inside a CT lung mask.

A lung proposal can take in gas under a diaphragm dome: the network or the air merge joins it
to the lung base through the partial-volume voxels of the thin diaphragm. Such gas is found
here from anatomy the volume shows, not from its size:

- **position**: the pocket lies below the base of the aerated lung of the same side (the lowest
  aerated voxel of each column, :func:`ml.ct.postprocess.below_lung_base`), in the lower part
  of that lung's height;
- **the dome**: above the pocket's top surface, soft tissue (the diaphragm) separates it from
  the aerated lung, or there is no lung above it at all;
- **3D connection**: a shell a few mm outside the pocket is mostly not aerated lung (stomach
  wall, fluid, liver, spleen), where a bulla or a cluster of emphysema is surrounded by lung.

The position and the connection must hold, and the dome must show unless the shell is almost
free of lung (a diaphragm thinner than a voxel). A costophrenic recess is parenchyma (about
−850 HU), not a pocket below −950 HU; an emphysematous base or a basal bulla has aerated lung
above it and around it. Arrays are canonical ``(D, H, W)`` (D toward superior, see
:mod:`ml.ct.io`), spacing ``(D, H, W)`` mm; the two lungs are labelled 1 and 2 (right and left,
or the two components before sides are assigned).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ml.ct.postprocess import below_lung_base, bounding_box, component_sizes

logger = logging.getLogger(__name__)

GAS_HU = -950.0
"""Gas: below this HU (the emphysema threshold, so a pocket is what the emphysema index counts)."""
AERATED_HU = -600.0
"""Aerated lung lies in [GAS_HU, AERATED_HU); at or above it, soft tissue (diaphragm, wall, fluid)."""
_STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)
_STRUCTURE_IN_PLANE = ndimage.generate_binary_structure(2, 1)[None]


@dataclass(frozen=True)
class GasRules:
    """The anatomical tests a gas pocket inside a lung mask must all pass to be subdiaphragmatic.

    Attributes:
        min_below: smallest fraction of the pocket's voxels below the aerated lung's base.
        max_height: the pocket's mean height above the lowest aerated slice of its lung, as a
            fraction of that lung's aerated height, is at most this (the domes sit in the lower
            part; the underside of an apex or of the lung over the heart is higher up).
        min_voxels: pockets of fewer voxels are not looked at (too few to tell their shape).
        min_capped: smallest fraction of its top-surface voxels with soft tissue (the diaphragm)
            between them and the aerated lung above, or no lung above within ``search_mm``.
        max_lung_contact: largest fraction of its outer shell that is aerated lung.
        contact_alone: a pocket below the base whose shell is at most this much aerated lung is
            gas below the diaphragm even when no soft tissue shows above it (a diaphragm thinner
            than a voxel, blurred into the gas and the lung).
        rim_mm: the shell starts this far out (the pocket's own partial-volume rim is skipped).
        shell_mm: the shell ends this far out (at least one voxel along every axis).
        search_mm: how far above the top surface the dome is looked for.
        noise_ml: pockets smaller than this are noise, not looked at (a floor, not the decision).
        erosions: in-plane erosion depths at which the gas is split into pockets. At depth 0 a
            pocket is a 26-connected component; a bubble joined to the lung's own low-attenuation
            voxels (emphysema) through a thin bridge of gas is one component with them, and is
            found apart from them at depth 1 or 2 (cores grown back within the gas).
    """

    min_below: float = 0.5
    max_height: float = 0.4
    min_voxels: int = 27
    min_capped: float = 0.5
    max_lung_contact: float = 0.5
    contact_alone: float = 0.1
    rim_mm: float = 2.0
    shell_mm: float = 6.0
    search_mm: float = 40.0
    noise_ml: float = 0.2
    erosions: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class GasPocket:
    """One 26-connected pocket of gas (< ``GAS_HU``) inside a lung, with its anatomical tests.

    Attributes:
        lung: label of the lung holding it (1 right, 2 left).
        volume_ml: its volume in mL.
        top_slice: highest slice index (D) it reaches.
        erosion: the in-plane erosion depth at which it was split off (see :class:`GasRules`).
        below: fraction of its voxels below the aerated lung's base.
        capped: fraction of its top-surface voxels separated from the lung above by soft tissue.
        lung_contact: fraction of its outer shell that is aerated lung of the same side.
        subdiaphragmatic: the tests of :class:`GasRules` passed.
    """

    lung: int
    volume_ml: float
    top_slice: int
    below: float
    capped: float
    lung_contact: float
    subdiaphragmatic: bool
    erosion: int = 0


def find_gas_pockets(
    labels: np.ndarray,
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float],
    rules: GasRules = GasRules(),
) -> tuple[list[GasPocket], np.ndarray]:
    """Gas pockets inside each lung of ``labels`` and which of them lie below the diaphragm.

    Args:
        labels: ``(D, H, W)`` uint8 lungs (1 right, 2 left; other values ignored).
        volume_hu: ``(D, H, W)`` HU on the same grid.
        spacing: ``(D, H, W)`` mm.
        rules: the anatomical tests.

    Returns:
        ``(pockets, subdiaphragmatic)``: every pocket of at least ``rules.noise_ml`` and a
        ``(D, H, W)`` boolean mask of the voxels of the subdiaphragmatic ones.
    """
    if labels.shape != volume_hu.shape:
        raise ValueError(f"labels {labels.shape} and volume {volume_hu.shape} are not on the same grid")
    found = np.zeros(labels.shape, dtype=bool)
    pockets: list[GasPocket] = []
    for lung in (1, 2):
        mask = labels == lung
        if not mask.any():
            continue
        box = bounding_box(mask, margin=int(np.ceil(rules.shell_mm / min(spacing))) + 1)
        gas = mask[box] & (volume_hu[box] < GAS_HU)
        for depth in rules.erosions:
            lung_pockets, hit = _pockets_of_lung(mask[box], volume_hu[box], _split_gas(gas, depth), spacing, lung,
                                                 rules)
            pockets.extend(replace(p, top_slice=p.top_slice + box[0].start, erosion=depth) for p in lung_pockets)
            found[box] |= hit
    return pockets, found


def _split_gas(gas: np.ndarray, depth: int) -> tuple[np.ndarray, int]:
    """Pockets of ``gas``: 26-connected components of its in-plane erosion by ``depth``, grown back.

    Each gas voxel within ``depth`` voxels of a core joins its nearest core; gas thinner than that
    (the bridge, scattered emphysema) belongs to no pocket.

    Returns:
        ``(labels, count)``: int32 pocket labels ``1..count`` (0 elsewhere).
    """
    if depth == 0:
        return ndimage.label(gas, structure=_STRUCTURE_26)
    cores = ndimage.binary_erosion(gas, structure=_STRUCTURE_IN_PLANE, iterations=depth)
    labels, count = ndimage.label(cores, structure=_STRUCTURE_26)
    if count == 0:
        return labels, 0
    distance, indices = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    grown = labels[tuple(indices)]
    return np.where(gas & (distance <= depth), grown, 0).astype(np.int32), count


def _pockets_of_lung(
    mask: np.ndarray, hu: np.ndarray, split: tuple[np.ndarray, int], spacing: tuple[float, float, float],
    lung: int, rules: GasRules,
) -> tuple[list[GasPocket], np.ndarray]:
    """The pockets ``split`` of one lung (``mask``, cropped) and the mask of its subdiaphragmatic ones."""
    components, count = split
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = component_sizes(components, count)
    sizes[0] = 0
    kept = np.flatnonzero((sizes * voxel_ml >= rules.noise_ml) & (sizes >= rules.min_voxels))
    if kept.size == 0:
        return [], np.zeros(mask.shape, dtype=bool)
    lut = np.zeros(count + 1, dtype=np.int32)
    lut[kept] = np.arange(1, kept.size + 1)
    pockets = lut[components]
    n = int(kept.size)
    distance, indices = ndimage.distance_transform_edt(pockets == 0, sampling=spacing, return_indices=True)
    nearest = pockets[tuple(indices)]
    aerated = mask & (hu >= GAS_HU) & (hu < AERATED_HU)
    rim = (distance <= rules.rim_mm) | ndimage.binary_dilation(pockets > 0, structure=_STRUCTURE_26)
    base_lung = aerated & ~rim  # the pockets' partial-volume rims (one voxel at least) are not lung base
    below = _fraction_per_pocket(pockets, below_lung_base(base_lung, spacing) if base_lung.any() else
                                 np.ones(mask.shape, dtype=bool), n)
    shell = ~rim & (distance <= max(rules.shell_mm, 2.01 * max(spacing)))
    contact = _fraction_per_pocket(np.where(shell, nearest, 0), aerated, n)
    capped = _capped_per_pocket(pockets, hu, aerated, spacing, rules, n)
    height = _height_per_pocket(pockets, base_lung, n)
    top = ndimage.maximum(np.arange(mask.shape[0])[:, None, None] * np.ones_like(pockets), pockets,
                          np.arange(1, n + 1))
    out: list[GasPocket] = []
    subdiaphragmatic = np.zeros(n + 1, dtype=bool)
    for i in range(1, n + 1):
        separated = capped[i] >= rules.min_capped or contact[i] <= rules.contact_alone
        verdict = bool(below[i] >= rules.min_below and height[i] <= rules.max_height and separated
                       and contact[i] <= rules.max_lung_contact)
        subdiaphragmatic[i] = verdict
        out.append(GasPocket(lung, round(float(sizes[kept[i - 1]]) * voxel_ml, 2), int(top[i - 1]),
                             round(float(below[i]), 3), round(float(capped[i]), 3), round(float(contact[i]), 3),
                             verdict))
    return out, subdiaphragmatic[pockets]


def _height_per_pocket(pockets: np.ndarray, lung: np.ndarray, n: int) -> np.ndarray:
    """Each pocket's mean slice above the lowest slice of ``lung``, as a fraction of its height."""
    slices = np.flatnonzero(lung.any(axis=(1, 2)))
    if slices.size == 0:
        return np.zeros(n + 1)
    z = np.nonzero(pockets)[0]
    mean_z = np.bincount(pockets[pockets > 0], weights=z, minlength=n + 1)[: n + 1] / np.maximum(
        np.bincount(pockets[pockets > 0], minlength=n + 1)[: n + 1], 1)
    return (mean_z - slices[0]) / max(1, slices[-1] - slices[0])


def _fraction_per_pocket(owner: np.ndarray, hit: np.ndarray, n: int) -> np.ndarray:
    """For each pocket ``1..n``, the fraction of the voxels ``owner`` gives it that are ``hit``."""
    total = np.bincount(owner.ravel(), minlength=n + 1)[: n + 1].astype(np.float64)
    hits = np.bincount(owner[hit].ravel(), minlength=n + 1)[: n + 1].astype(np.float64)
    return np.divide(hits, total, out=np.zeros(n + 1), where=total > 0)


def _capped_per_pocket(
    pockets: np.ndarray, hu: np.ndarray, aerated: np.ndarray, spacing: tuple[float, float, float],
    rules: GasRules, n: int,
) -> np.ndarray:
    """Fraction of each pocket's top-surface voxels under a dome: soft tissue before lung above.

    Walking up each column from a top-surface voxel, the first aerated lung voxel met ends the
    walk; the voxel is capped when soft tissue (≥ ``AERATED_HU``) was crossed before it (the
    diaphragm) or when no lung is met within ``rules.search_mm``. Within ``rules.rim_mm`` only
    soft tissue counts (the pocket's own partial-volume rim is not lung).
    """
    above = np.zeros_like(pockets)
    above[:-1] = pockets[1:]
    z, y, x = np.nonzero((pockets > 0) & (above != pockets))
    owner = pockets[z, y, x]
    blocked = np.zeros(z.size, dtype=bool)
    resolved = np.zeros(z.size, dtype=bool)
    capped = np.zeros(z.size, dtype=bool)
    steps = max(1, int(rules.search_mm / spacing[0]))
    for step in range(1, steps + 1):
        zz = z + step
        inside = zz < pockets.shape[0]
        open_ = ~resolved & inside
        if not open_.any():
            break
        idx = np.flatnonzero(open_)
        lung_here = aerated[zz[idx], y[idx], x[idx]] & (step * spacing[0] > rules.rim_mm)
        capped[idx[lung_here]] = blocked[idx[lung_here]]
        resolved[idx[lung_here]] = True
        blocked[idx[~lung_here & (hu[zz[idx], y[idx], x[idx]] >= AERATED_HU)]] = True
    capped[~resolved] = True  # no lung above within reach: nothing but the abdomen over it
    total = np.bincount(owner, minlength=n + 1)[: n + 1].astype(np.float64)
    hits = np.bincount(owner[capped], minlength=n + 1)[: n + 1].astype(np.float64)
    return np.divide(hits, total, out=np.zeros(n + 1), where=total > 0)


def remove_subdiaphragmatic_gas(
    labels: np.ndarray,
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float],
    rules: GasRules = GasRules(),
) -> tuple[np.ndarray, np.ndarray]:
    """Remove gas below the diaphragm from lung labels, with its partial-volume rim.

    The subdiaphragmatic pockets (:func:`find_gas_pockets`) are removed, and so are the lung
    voxels within ``rules.shell_mm`` of them that are nearer to a pocket than to the rest of
    that lung: the pocket's partial-volume rim (one voxel) and the soft tissue the mask took
    with it (the diaphragm, a bridge through it). Aerated lung beyond the rim is the rest, so
    the lung across the diaphragm and a recess beside the dome stay.

    Args:
        labels: ``(D, H, W)`` uint8 lungs (1 right, 2 left).
        volume_hu: ``(D, H, W)`` HU.
        spacing: ``(D, H, W)`` mm.
        rules: the anatomical tests.

    Returns:
        ``(labels without the gas, boolean mask of the removed voxels)``.
    """
    pockets, gas = find_gas_pockets(labels, volume_hu, spacing, rules)
    if not gas.any():
        return labels, gas
    box = bounding_box(gas, margin=int(np.ceil(rules.shell_mm / min(spacing))) + 1)
    sub, sub_gas, hu = labels[box], gas[box], volume_hu[box]
    distance = ndimage.distance_transform_edt(~sub_gas, sampling=spacing)
    near = (sub > 0) & (distance <= rules.shell_mm) & ~sub_gas
    rim = distance <= max(rules.rim_mm, 1.01 * max(spacing[1], spacing[2]))
    rest = (sub > 0) & ~sub_gas & (hu < AERATED_HU) & ~rim
    seeds = np.where(sub_gas, 2, np.where(rest, 1, 0))
    _, indices = ndimage.distance_transform_edt(seeds == 0, sampling=spacing, return_indices=True)
    cut = sub_gas | (near & (seeds[tuple(indices)] == 2))
    out = labels.copy()
    out[box][cut] = 0
    removed = np.zeros(labels.shape, dtype=bool)
    removed[box] = cut & (sub > 0)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for pocket in (p for p in pockets if p.subdiaphragmatic):
        logger.info("gas below the diaphragm in lung %d: %.1f mL (below %.2f, capped %.2f, lung contact %.2f)",
                    pocket.lung, pocket.volume_ml, pocket.below, pocket.capped, pocket.lung_contact)
    logger.info("removed %.1f mL of subdiaphragmatic gas and its rim", float(removed.sum()) * voxel_ml)
    return out, removed


def gas_in_lungs_ml(
    labels: np.ndarray, volume_hu: np.ndarray, spacing: tuple[float, float, float], rules: GasRules = GasRules()
) -> dict[str, float]:
    """Gas inside each lung: all voxels below ``GAS_HU`` and the subdiaphragmatic part, in mL.

    Returns:
        ``{"right_gas_ml", "left_gas_ml", "right_subdiaphragmatic_gas_ml", "left_subdiaphragmatic_gas_ml"}``.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    _, gas = find_gas_pockets(labels, volume_hu, spacing, rules)
    out: dict[str, float] = {}
    for value, name in ((1, "right"), (2, "left")):
        lung = labels == value
        out[f"{name}_gas_ml"] = round(float(np.count_nonzero(lung & (volume_hu < GAS_HU))) * voxel_ml, 2)
        out[f"{name}_subdiaphragmatic_gas_ml"] = round(float(np.count_nonzero(lung & gas)) * voxel_ml, 2)
    return out
