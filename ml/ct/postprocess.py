"""3D post-processing of CT lung masks: airway removal, two lungs, holes, right/left sides.

All functions take canonical ``(D, H, W)`` arrays (see :mod:`ml.ct.io`: W runs toward the
patient's left, H toward posterior, D toward superior) and spacing in mm in ``(D, H, W)`` order.
The output label convention is 0 = background, 1 = patient's right lung, 2 = patient's left lung.

Why over 500 lines: the steps run in a fixed order on shared connected-component helpers
(airways first, then the split into two lungs, then holes and sides); each step is short, and
keeping them together keeps that order readable in one place.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

RIGHT_LUNG = 1
LEFT_LUNG = 2
_STRUCTURE_6 = ndimage.generate_binary_structure(3, 1)
_STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)
_STRUCTURE_IN_PLANE = ndimage.generate_binary_structure(2, 1)[None]  # (1, 3, 3): 4-neighbours within a slice


def component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Voxel count of each component ``1..count`` of a label image; index 0 is background."""
    return np.bincount(labels.ravel(), minlength=count + 1)


def largest_components(mask: np.ndarray, keep: int, min_voxels: int = 1) -> np.ndarray:
    """Label the ``keep`` largest 3D components of a binary mask (26-connectivity).

    Args:
        mask: ``(D, H, W)`` boolean.
        keep: how many components to keep.
        min_voxels: components smaller than this are dropped.

    Returns:
        ``(D, H, W)`` int32 labels ``1..n`` (n ≤ keep), ordered by decreasing size.
    """
    labels, count = ndimage.label(mask, structure=_STRUCTURE_26)
    if count == 0:
        return labels.astype(np.int32)
    sizes = component_sizes(labels, count)
    sizes[0] = 0
    order = [int(i) for i in np.argsort(sizes)[::-1][:keep] if sizes[i] >= min_voxels]
    lut = np.zeros(count + 1, dtype=np.int32)
    for rank, index in enumerate(order, start=1):
        lut[index] = rank
    return lut[labels]


def body_mask(volume_hu: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """The patient's body: largest component above ``threshold_hu``, holes filled per slice.

    Args:
        volume_hu: ``(D, H, W)`` HU.
        threshold_hu: soft-tissue/air threshold in HU.

    Returns:
        ``(D, H, W)`` boolean.
    """
    dense = volume_hu > threshold_hu
    dense = ndimage.binary_opening(dense, structure=_STRUCTURE_6)
    body = largest_components(dense, keep=1) > 0
    return fill_holes_per_slice(body)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes of a ``(D, H, W)`` boolean mask in each axial slice."""
    out = np.empty_like(mask, dtype=bool)
    for z in range(mask.shape[0]):
        out[z] = ndimage.binary_fill_holes(mask[z])
    return out


def airway_mask(
    volume_hu: np.ndarray,
    air: np.ndarray,
    spacing: tuple[float, float, float],
    max_ml: float = 250.0,
) -> np.ndarray:
    """Trachea and main bronchi by leak-controlled region growing from a seed in the trachea.

    The seed is the most superior small, central air component. The airway is grown in
    ``air & (HU < t)`` for increasing thresholds ``t``; growth stops before the region leaks
    into the lungs (sudden volume jump or more than ``max_ml``).

    Args:
        volume_hu: ``(D, H, W)`` HU.
        air: ``(D, H, W)`` boolean air inside the body (lungs plus airways).
        spacing: voxel spacing ``(D, H, W)`` in mm.
        max_ml: largest plausible volume of trachea plus main bronchi, in mL.

    Returns:
        ``(D, H, W)`` boolean airway mask (empty when no trachea is found).
    """
    found = _trachea_track(air, volume_hu, spacing)
    if found is None:
        logger.info("no trachea seed found; airway removal skipped")
        return np.zeros_like(air, dtype=bool)
    track, seeds = found
    voxel_ml = float(np.prod(spacing)) / 1000.0
    best = track
    previous_ml = float(track.sum()) * voxel_ml
    for threshold in (-990.0, -975.0, -960.0, -945.0, -930.0, -915.0, -900.0):
        region = _grow(air & (volume_hu < threshold), seeds) | track
        volume_ml = float(region.sum()) * voxel_ml
        if volume_ml > max_ml or (previous_ml > 5.0 and volume_ml > 2.0 * previous_ml + 10.0):
            break
        best, previous_ml = region, volume_ml
    logger.debug("airway volume %.1f mL", previous_ml)
    return best


def _grow(candidates: np.ndarray, seeds: list[tuple[int, int, int]]) -> np.ndarray:
    """The components of ``candidates`` (26-connected) that hold one of ``seeds``."""
    inside = [seed for seed in seeds if candidates[seed]]
    if not inside:
        return np.zeros_like(candidates, dtype=bool)
    labels, _ = ndimage.label(candidates, structure=_STRUCTURE_26)
    return np.isin(labels, np.unique([labels[seed] for seed in inside]))


def _trachea_track(
    air: np.ndarray, volume_hu: np.ndarray, spacing: tuple[float, float, float], max_area_mm2: float = 700.0
) -> tuple[np.ndarray, list[tuple[int, int, int]]] | None:
    """The trachea followed slice by slice from its top down to where it meets the lungs.

    Starting from :func:`_trachea_start`, each lower slice keeps the air blobs that overlap the
    trachea of the slice above (grown by 2 voxels); the track ends when no blob overlaps or the
    blob grows beyond ``max_area_mm2`` (the carina joins the bronchi and lungs). Following the
    blobs rather than growing below a fixed HU crosses slices where streaks from the shoulders
    or partial volume raise the trachea above every growing threshold.

    Returns:
        ``(track, seeds)``: the boolean trachea blobs and the darkest voxel of each as seeds, or
        ``None`` when no trachea start is found.
    """
    start = _trachea_start(air, spacing)
    if start is None:
        return None
    z, blob = start
    pixel_mm2 = spacing[1] * spacing[2]
    track = np.zeros_like(air, dtype=bool)
    seeds = []
    while True:
        track[z] = blob
        ys, xs = np.nonzero(blob)
        darkest = int(np.argmin(volume_hu[z][ys, xs]))
        seeds.append((z, int(ys[darkest]), int(xs[darkest])))
        if z == 0:
            break
        labels, _ = ndimage.label(air[z - 1])
        near = ndimage.binary_dilation(blob, iterations=2) & (labels > 0)
        if not near.any():
            break
        below = np.isin(labels, np.unique(labels[near]))
        if float(below.sum()) * pixel_mm2 > max_area_mm2:
            break
        z, blob = z - 1, below
    return track, seeds


def _trachea_start(air: np.ndarray, spacing: tuple[float, float, float]) -> tuple[int, np.ndarray] | None:
    """The trachea's top: a small (0.6–7 cm²), roughly central air blob in a superior slice."""
    depth, height, width = air.shape
    pixel_mm2 = spacing[1] * spacing[2]
    areas = air.reshape(depth, -1).sum(axis=1) * pixel_mm2
    slices_with_air = np.flatnonzero(areas > 50.0)
    if slices_with_air.size == 0:
        return None
    top = slices_with_air[-1]
    for z in range(top, max(top - int(60.0 / spacing[0]), -1), -1):
        labels, count = ndimage.label(air[z])
        for index in range(1, count + 1):
            blob = labels == index
            area = float(blob.sum()) * pixel_mm2
            if not 60.0 <= area <= 700.0:
                continue
            ys, xs = np.nonzero(blob)
            if abs(xs.mean() - width / 2) < 0.15 * width and ys.mean() < 0.75 * height:
                if _is_isolated_blob(air, z, blob, spacing):
                    return z, blob
    return None


def _is_isolated_blob(air: np.ndarray, z: int, blob: np.ndarray, spacing: tuple[float, float, float]) -> bool:
    """True when the air in slice ``z`` is mostly this blob, or the blob is the most central one."""
    other = air[z] & ~blob
    return float(other.sum()) * spacing[1] * spacing[2] < 20_000.0


def separate_lungs(mask: np.ndarray, spacing: tuple[float, float, float], min_ml: float = 30.0) -> np.ndarray:
    """Split a lung mask into two components, eroding where the lungs touch.

    Args:
        mask: ``(D, H, W)`` boolean lungs (airways already removed).
        spacing: ``(D, H, W)`` mm.
        min_ml: smallest volume in mL accepted as a lung.

    Returns:
        ``(D, H, W)`` int32 with components 1 and 2 (arbitrary order; 0 elsewhere). A single
        component is returned when the mask cannot be split.
    """
    min_voxels = max(1, int(min_ml * 1000.0 / float(np.prod(spacing))))
    parts = largest_components(mask, keep=2, min_voxels=min_voxels)
    if _two_balanced(parts):
        return parts
    eroded = mask.copy()
    for _ in range(8):
        eroded = ndimage.binary_erosion(eroded, structure=_STRUCTURE_6)
        seeds = largest_components(eroded, keep=2, min_voxels=max(1, min_voxels // 4))
        if _two_balanced(seeds):
            return _grow_back(seeds, mask)
    logger.info("lungs could not be separated; keeping one component")
    return largest_components(mask, keep=1, min_voxels=min_voxels)


def _two_balanced(parts: np.ndarray, ratio: float = 0.2) -> bool:
    sizes = np.bincount(parts.ravel(), minlength=3)[1:3]
    return bool(sizes[1] > 0 and sizes[1] >= ratio * sizes[0])


def components_holding(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 26-connected components of ``mask`` that hold at least one voxel of ``seeds``."""
    components, count = ndimage.label(mask, structure=_STRUCTURE_26)
    held = np.zeros(count + 1, dtype=bool)
    held[components[seeds > 0]] = True
    held[0] = False
    return held[components]


def _grow_back(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Assign each voxel of the components of ``mask`` that hold a seed to its nearest seed.

    Other components of ``mask`` (stray air, fragments) stay unlabelled: they are not part of
    the lungs that were eroded apart.
    """
    mask = components_holding(mask, seeds)
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    sub_seeds = seeds[box]
    _, indices = ndimage.distance_transform_edt(sub_seeds == 0, return_indices=True)
    nearest = sub_seeds[tuple(indices)]
    out = np.zeros_like(seeds)
    out[box] = np.where(mask[box], nearest, 0)
    return out


def join_large_fragments(
    parts: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    min_ml: float,
    body: np.ndarray | None = None,
    max_gap_mm: float = 20.0,
) -> np.ndarray:
    """Join large components of ``mask`` outside ``parts`` to the nearest lung.

    A tumour can cut an apex off the rest of its lung; such a piece is big, inside the body and
    close to its lung. Air outside the body (between arm and chest wall, in front of the neck)
    and gas below a lung's base (under the diaphragm) that the network took for lung are not,
    and stay out.

    Args:
        parts: ``(D, H, W)`` int lung components (1, 2) from :func:`separate_lungs`.
        mask: ``(D, H, W)`` boolean lung mask ``parts`` was taken from.
        spacing: ``(D, H, W)`` mm.
        min_ml: smallest fragment kept, in mL.
        body: ``(D, H, W)`` boolean body mask; fragments mostly outside it are dropped.
        max_gap_mm: largest distance from the fragment to a lung.

    Returns:
        ``parts`` with each kept fragment given the label of the part nearest to it.
    """
    rest = mask & (parts == 0)
    if not rest.any() or not parts.any():
        return parts
    labels, count = ndimage.label(rest, structure=_STRUCTURE_26)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = component_sizes(labels, count) * voxel_ml
    candidates = [i for i in range(1, count + 1) if sizes[i] >= min_ml]
    if not candidates:
        return parts
    distance, indices = ndimage.distance_transform_edt(parts == 0, sampling=spacing, return_indices=True)
    under = below_lung_base(parts > 0, spacing)
    out = parts.copy()
    for index in candidates:
        fragment = labels == index
        if body is not None and body[fragment].mean() < 0.5:
            continue
        if distance[fragment].min() > max_gap_mm:
            continue
        if under[fragment].mean() >= 0.5:
            logger.info("dropped a %.1f mL fragment below a lung base (gas under the diaphragm)", sizes[index])
            continue
        nearest = parts[tuple(axis[fragment] for axis in indices)]
        out[fragment] = nearest
        logger.info("joined a lung fragment of %.1f mL", sizes[index])
    return out


def below_lung_base(lungs: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Voxels below the lungs' base surface.

    The base surface is the lowest lung voxel of each (H, W) column, extended to the columns
    without lung by the nearest lung column (so gas under the heart, medial to a lung base,
    is below it too). In the canonical orientation the D axis runs toward superior, so "below"
    is a lower slice index. Gas under a diaphragm dome (stomach, colon) lies there; a piece of
    lung cut off by a tumour (an apex above a mass, a segment beside it) does not.

    Args:
        lungs: ``(D, H, W)`` boolean lungs.
        spacing: ``(D, H, W)`` mm (the in-plane part decides the nearest column).

    Returns:
        ``(D, H, W)`` boolean, False on the lung voxels themselves.
    """
    columns = lungs.any(0)
    if not columns.any():
        return np.zeros(lungs.shape, dtype=bool)
    base = np.argmax(lungs, axis=0)
    if not columns.all():
        _, (rows, cols) = ndimage.distance_transform_edt(~columns, sampling=spacing[1:], return_indices=True)
        base = base[rows, cols]
    return np.arange(lungs.shape[0])[:, None, None] < base[None]


def split_off_gas_below_bases(
    parts: np.ndarray,
    spacing: tuple[float, float, float],
    min_ml: float = 5.0,
    max_erosions: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut gas under a diaphragm dome (stomach, colon) off a lung it is joined to.

    On coarse or noisy scans the network can take the stomach bubble for lung, joined to the
    lung base by a thin partial-volume bridge through the diaphragm. Each lung is eroded until
    a core apart from its main core appears; a core of at least ``min_ml`` lying below the main
    core's base (:func:`below_lung_base`) is gas, and the voxels nearer to it than to the main
    core are removed. A costophrenic recess stays: it is thin, so its core is small or absent.

    Args:
        parts: ``(D, H, W)`` int lungs (1, 2).
        spacing: ``(D, H, W)`` mm.
        min_ml: smallest eroded core treated as gas, in mL.
        max_erosions: deepest erosion tried (6-connected steps).

    Returns:
        ``(parts without the gas, boolean mask of the removed voxels)``.
    """
    out = parts.copy()
    removed = np.zeros(parts.shape, dtype=bool)
    min_voxels = max(1, int(min_ml * 1000.0 / float(np.prod(spacing))))
    for lung in (1, 2):
        mask = parts == lung
        if not mask.any():
            continue
        box = bounding_box(mask, margin=1)
        sub = mask[box]
        core = sub
        for _ in range(max_erosions):
            core = ndimage.binary_erosion(core, structure=_STRUCTURE_6)
            cores, count = ndimage.label(core, structure=_STRUCTURE_26)
            if count < 2:
                continue
            sizes = component_sizes(cores, count)
            sizes[0] = 0
            main = int(np.argmax(sizes))
            under = below_lung_base(cores == main, spacing)
            gas = [i for i in range(1, count + 1)
                   if i != main and sizes[i] >= min_voxels and under[cores == i].mean() >= 0.5]
            if not gas:
                continue
            seeds = np.where(np.isin(cores, gas), 2, np.where(cores == main, 1, 0))
            _, indices = ndimage.distance_transform_edt(seeds == 0, sampling=spacing, return_indices=True)
            cut = sub & (seeds[tuple(indices)] == 2)
            out[box][cut] = 0
            removed[box] |= cut
            logger.info("cut %.1f mL of gas below the base of lung %d", cut.sum() * np.prod(spacing) / 1000.0, lung)
            break
    return out, removed


def merge_fragments(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Merge components of ``mask`` that touch a labelled lung into the lungs; drop the rest.

    Each voxel of a touching fragment joins the nearest lung, so a fragment bridging both lungs
    is shared between them.

    Args:
        labels: ``(D, H, W)`` int lungs (1, 2).
        mask: ``(D, H, W)`` boolean candidate lung voxels (a superset of ``labels > 0``).

    Returns:
        ``(D, H, W)`` labels with touching fragments added.
    """
    fragments = mask & (labels == 0)
    if not fragments.any() or not labels.any():
        return labels
    frag_labels, count = ndimage.label(fragments, structure=_STRUCTURE_26)
    grown = ndimage.binary_dilation(labels > 0, structure=_STRUCTURE_26)
    touching = np.zeros(count + 1, dtype=bool)
    touching[np.unique(frag_labels[grown & (frag_labels > 0)])] = True
    touching[0] = False
    joined = touching[frag_labels]
    if not joined.any():
        return labels
    box = bounding_box(joined | (labels > 0))
    _, indices = ndimage.distance_transform_edt(labels[box] == 0, return_indices=True)
    nearest = labels[box][tuple(indices)]
    out = labels.copy()
    out[box] = np.where(joined[box], nearest, labels[box])
    return out


def fill_lung_holes(labels: np.ndarray) -> np.ndarray:
    """Fill holes of each lung in every axial slice (vessels, nodules enclosed by lung)."""
    out = labels.copy()
    for lung in (RIGHT_LUNG, LEFT_LUNG):
        filled = fill_holes_per_slice(labels == lung)
        out[filled & (out == 0)] = lung
    return out


def assign_sides(
    parts: np.ndarray,
    direction: tuple[float, ...],
    lung_only: bool = False,
    offset: tuple[int, int, int] = (0, 0, 0),
    full_width: int | None = None,
) -> np.ndarray:
    """Label components by patient side: 1 = right lung, 2 = left lung.

    The side comes from the patient-coordinate x (LPS: +x toward the patient's left) of each
    component's centroid, so it follows the patient orientation, not the image side.

    Args:
        parts: ``(D, H, W)`` components 1 and 2 (order arbitrary).
        direction: the 9 direction cosines of the canonical grid (row-major 3×3).
        lung_only: label every lung voxel 1 (no side) instead.
        offset: index ``(z, y, x)`` of ``parts[0, 0, 0]`` in the full grid (when cropped).
        full_width: W of the full grid (default: assumes the crop is centred); used only to
            place a single lung left or right of the midline.

    Returns:
        ``(D, H, W)`` uint8 labels.
    """
    out = np.zeros(parts.shape, dtype=np.uint8)
    present = [p for p in (1, 2) if (parts == p).any()]
    if lung_only or not present:
        out[parts > 0] = 1
        return out
    matrix = np.array(direction, dtype=float).reshape(3, 3)
    patient_x = {}
    for p in present:
        z, y, x = ndimage.center_of_mass(parts == p)
        patient_x[p] = float(matrix[0] @ (np.array([x, y, z]) + np.array(offset[::-1])))
    if len(present) == 1:
        p = present[0]
        width = full_width if full_width is not None else parts.shape[2] + 2 * offset[2]
        width_centre = float(matrix[0] @ np.array([(width - 1) / 2, 0.0, 0.0]))
        out[parts == p] = RIGHT_LUNG if patient_x[p] < width_centre else LEFT_LUNG
        return out
    right = min(present, key=lambda p: patient_x[p])
    out[parts == right] = RIGHT_LUNG
    out[(parts > 0) & (parts != right)] = LEFT_LUNG
    return out


def postprocess_lungs(
    lung: np.ndarray,
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float],
    direction: tuple[float, ...],
    extra: np.ndarray | None = None,
    keep_fragments_ml: float | None = None,
    body: np.ndarray | None = None,
    airway_margin_mm: float | None = None,
) -> np.ndarray:
    """From a binary lung proposal to right/left lung labels.

    Steps: airways removed, 3D components (two lungs kept, split where they touch), fragments
    merged into the lung they touch, holes filled per slice, sides from patient orientation.

    Args:
        lung: ``(D, H, W)`` boolean lung proposal (may include trachea and bronchi).
        volume_hu: ``(D, H, W)`` HU on the same grid.
        spacing: ``(D, H, W)`` mm.
        direction: canonical direction cosines (9 floats).
        extra: ``(D, H, W)`` boolean further candidates (e.g. low-HU air) merged where they
            touch a lung; airways are removed from them too.
        keep_fragments_ml: when given, components of ``lung`` beyond the two lungs that hold at
            least this many mL are kept and joined to the nearest lung (lung cut off by a tumour,
            e.g. an apex above a mass). Off for the classical method, whose air components
            include bowel gas.
        body: ``(D, H, W)`` boolean body mask for ``keep_fragments_ml`` (computed when omitted).
        airway_margin_mm: in-plane width in mm of the airway wall removed with the airways
            (see :func:`airway_wall`); one voxel of ``spacing`` when omitted.

    Returns:
        ``(D, H, W)`` uint8: 0 background, 1 right lung, 2 left lung.
    """
    out = np.zeros(lung.shape, dtype=np.uint8)
    if not lung.any():
        return out
    box = bounding_box(lung, margin=8)
    lung, volume_hu = lung[box], volume_hu[box]
    candidates = lung | extra[box] if extra is not None else lung
    airway = airway_mask(volume_hu, candidates, spacing)
    airway = airway_wall(airway, spacing, airway_margin_mm)
    lung = lung & ~airway
    parts = separate_lungs(lung, spacing)
    if keep_fragments_ml is not None:
        inside = body[box] if body is not None else body_mask(volume_hu)
        parts = join_large_fragments(parts, lung, spacing, keep_fragments_ml, body=inside)
    parts = merge_fragments(parts, candidates & ~airway)
    # issue 24: gas under a diaphragm dome (stomach, colon, free air) is never lung, whatever its size
    from ml.ct.gas import remove_subdiaphragmatic_gas  # noqa: PLC0415 (ml.ct.gas imports this module)

    _, gas = remove_subdiaphragmatic_gas(parts, volume_hu, spacing)  # found on the lungs before any cut
    parts, _ = split_off_gas_below_bases(parts, spacing)
    parts = np.where(gas, 0, parts)
    labels = assign_sides(parts, direction, offset=tuple(s.start for s in box), full_width=out.shape[2])
    out[box] = np.where(gas, 0, fill_lung_holes(labels))  # issue 24: holes filled per slice stay without the gas
    return out


def airway_wall(airway: np.ndarray, spacing: tuple[float, float, float], margin_mm: float | None = None) -> np.ndarray:
    """The airway grown by its wall: one voxel in 3D, then in-plane up to ``margin_mm``.

    The partial-volume ring of the airway wall is about one voxel of the scan wide. When the
    airway is found on a finer grid than the scan's (a 4 mm scan resized to the model grid),
    one voxel of that grid leaves most of the ring to the lungs; ``margin_mm`` (the scan's
    in-plane spacing) sets the width in mm instead.

    Args:
        airway: ``(D, H, W)`` boolean airway.
        spacing: ``(D, H, W)`` mm of the grid ``airway`` is on.
        margin_mm: in-plane wall width in mm; ``None`` for one voxel.

    Returns:
        ``(D, H, W)`` boolean airway with its wall.
    """
    if not airway.any():
        return airway
    grown = ndimage.binary_dilation(airway, structure=_STRUCTURE_6)
    extra = 0 if margin_mm is None else int(round(margin_mm / float(spacing[1]))) - 1
    if extra > 0:
        grown = ndimage.binary_dilation(grown, structure=_STRUCTURE_IN_PLANE, iterations=extra)
    return grown


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of a non-empty mask, grown by ``margin`` voxels."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != axis)))
        box.append(slice(max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + margin + 1)))
    return tuple(box)
