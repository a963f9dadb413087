"""Lung-aware automatic quality checks of a label map: pure functions over numpy arrays.

Every check takes a label map with the Pleura convention (0 background, 1 patient's RIGHT lung,
2 patient's LEFT lung), either a chest X-ray ``(H, W)`` or a CT ``(D, H, W)``, and returns a
:class:`Flag`: a named value, whether it is out of the plausible range, and a short reason a
person can read. :func:`evaluate` runs every check that applies to the modality. Nothing here
touches Django (:mod:`annotation.labelmaps` is plain numpy); :mod:`quality.services` stores the
flags of a mask revision.

Plausible ranges (:class:`Thresholds`) were set from the reference masks in ``../shared/data``:
X-ray lung fields cover 10-55 % of the image (1st-99th percentile 11-45 %), right/left area
ratio 0.74-2.24; adult CT lung volumes are 1-5 L per lung.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from annotation import labelmaps

logger = logging.getLogger(__name__)

RIGHT, LEFT = 1, 2
MODALITIES = ("cxr", "ct")


class QCInputError(ValueError):
    """The label map or its spacing does not fit the modality."""


@dataclass(frozen=True)
class Thresholds:
    """Plausible ranges for one modality; values outside raise a flag.

    Attributes:
        size_min / size_max: total lung area (mm², X-ray with known pixel spacing) or volume (mL, CT).
        fraction_min / fraction_max: X-ray only, lung area as a fraction of the image.
        ratio_min / ratio_max: right/left lung area or volume ratio.
        border_max: largest tolerated fraction of the border pixels that are lung.
        discontinuity_max: CT only, largest tolerated ``1 - Dice`` between adjacent slices.
        entropy_max: largest tolerated mean normalised predictive entropy (entropy / log C, in [0, 1]).
        confidence_min: smallest tolerated model confidence in [0, 1].
    """

    size_min: float
    size_max: float
    fraction_min: float = 0.0
    fraction_max: float = 1.0
    ratio_min: float = 0.6
    ratio_max: float = 2.0
    border_max: float = 0.0
    discontinuity_max: float = 0.5
    entropy_max: float = 0.25
    confidence_min: float = 0.8


DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "cxr": Thresholds(size_min=5_000.0, size_max=100_000.0, fraction_min=0.08, fraction_max=0.55,
                      ratio_min=0.65, ratio_max=2.3),
    "ct": Thresholds(size_min=800.0, size_max=10_000.0, ratio_min=0.5, ratio_max=2.0),
}


@dataclass
class Flag:
    """One check's outcome.

    Attributes:
        name: check name (``components``, ``lung_size``, ``side_ratio``, ``border``, ``empty_side``,
            ``slice_discontinuity``, ``gas_below_base``, ``side_plausibility``, ``confidence``).
        value: the measured value (unit in ``unit``); ``None`` when it cannot be measured.
        flagged: the value is outside the plausible range.
        unit: unit of ``value``.
        message: what was found, for a person.
        detail: extra measurements (JSON-serialisable).
    """

    name: str
    value: float | None
    flagged: bool
    unit: str = ""
    message: str = ""
    detail: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _check_labels(labels: np.ndarray, modality: str) -> None:
    ndim = {"cxr": 2, "ct": 3}.get(modality)
    if ndim is None:
        raise QCInputError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    if labels.ndim != ndim:
        raise QCInputError(f"{modality} label map must have {ndim} dimensions, got shape {labels.shape}")


def _crop(mask: np.ndarray) -> np.ndarray:
    """The bounding box of a boolean mask (component labelling of a 300-slice CT is 4x faster on it)."""
    if not mask.any():
        return mask
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return mask[tuple(box)]


def count_components(labels: np.ndarray) -> Flag:
    """Connected components per lung (full connectivity); more or fewer than one per side is flagged.

    Args:
        labels: ``(H, W)`` or ``(D, H, W)`` uint8 label map.
    """
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    per_side = {name: int(ndimage.label(_crop(labels == value), structure=structure)[1])
                for name, value in (("right", RIGHT), ("left", LEFT))}
    total = sum(per_side.values())
    flagged = any(n != 1 for n in per_side.values())
    message = (f"{per_side['right']} right and {per_side['left']} left lung component(s); one per lung expected"
               if flagged else "one component per lung")
    return Flag("components", float(total), flagged, "count", message, {"per_side": per_side})


def side_sizes(labels: np.ndarray, spacing: tuple[float, ...] | None) -> tuple[float, float, str]:
    """Right and left lung size: mm² (2D), mL (3D), or pixels when the spacing is unknown.

    Args:
        labels: ``(H, W)`` or ``(D, H, W)`` label map.
        spacing: pixel/voxel spacing in mm in array axis order, or ``None``.

    Returns:
        ``(right, left, unit)`` with unit ``"mm2"``, ``"mL"`` or ``"px"`` (as stored on a revision,
        :func:`annotation.labelmaps.side_sizes`).

    Raises:
        QCInputError: the spacing has another number of axes than the label map.
    """
    if spacing is not None and len(spacing) != labels.ndim:
        raise QCInputError(f"spacing {spacing} does not match a label map of shape {labels.shape}")
    return labelmaps.side_sizes(labels, spacing)


def lung_size(labels: np.ndarray, spacing: tuple[float, ...] | None, limits: Thresholds) -> Flag:
    """Total lung area (X-ray) or volume (CT) against the plausible range of the modality."""
    right, left, unit = side_sizes(labels, spacing)
    total = right + left
    fraction = float(np.count_nonzero(labels)) / labels.size
    reasons: list[str] = []
    if unit != "px" and not limits.size_min <= total <= limits.size_max:
        reasons.append(f"total {total:.0f} {unit} outside [{limits.size_min:.0f}, {limits.size_max:.0f}]")
    if labels.ndim == 2 and not limits.fraction_min <= fraction <= limits.fraction_max:
        reasons.append(f"lungs cover {fraction:.1%} of the image, outside "
                       f"[{limits.fraction_min:.0%}, {limits.fraction_max:.0%}]")
    message = "; ".join(reasons) or f"total {total:.0f} {unit}"
    return Flag("lung_size", total, bool(reasons), unit, message,
                {"right": right, "left": left, "fraction": fraction})


def side_ratio(labels: np.ndarray, limits: Thresholds) -> Flag:
    """Right/left size ratio (unitless); ``None`` when a side is empty (see :func:`empty_side`)."""
    right, left = np.count_nonzero(labels == RIGHT), np.count_nonzero(labels == LEFT)
    if right == 0 or left == 0:
        return Flag("side_ratio", None, True, "ratio", "a lung is missing: no ratio")
    ratio = float(right) / float(left)
    flagged = not limits.ratio_min <= ratio <= limits.ratio_max
    message = (f"right/left ratio {ratio:.2f} outside [{limits.ratio_min}, {limits.ratio_max}]"
               if flagged else f"right/left ratio {ratio:.2f}")
    return Flag("side_ratio", ratio, flagged, "ratio", message)


def border_contact(labels: np.ndarray, limits: Thresholds) -> Flag:
    """Fraction of the in-plane border pixels labelled lung (each axial slice for CT).

    The superior and inferior ends of a CT are not borders: a scan may stop inside the lungs.
    """
    lung = labels > 0
    edges = [lung[..., 0, :], lung[..., -1, :], lung[..., :, 0], lung[..., :, -1]]
    touching = sum(int(np.count_nonzero(e)) for e in edges)
    total = sum(e.size for e in edges)
    fraction = touching / total
    flagged = fraction > limits.border_max
    message = (f"lung touches the image border on {touching} pixel(s)" if flagged
               else "lung clear of the image border")
    return Flag("border", fraction, flagged, "fraction", message, {"pixels": touching})


def empty_side(labels: np.ndarray) -> Flag:
    """Number of lungs (0, 1 or 2) with no pixel at all."""
    missing = [name for name, value in (("right", RIGHT), ("left", LEFT)) if not np.any(labels == value)]
    message = f"no {' and no '.join(missing)} lung" if missing else "both lungs present"
    return Flag("empty_side", float(len(missing)), bool(missing), "count", message, {"missing": missing})


def slice_discontinuity(labels: np.ndarray, limits: Thresholds) -> Flag:
    """Largest ``1 - Dice`` between adjacent axial slices inside the lungs' cranio-caudal extent.

    Only slice pairs where both slices hold at least 10 % of the largest slice's lung area are
    compared (apex and base change fast by nature); empty slices inside the extent count as gaps
    and are flagged on their own.

    Args:
        labels: ``(D, H, W)`` label map.
    """
    lung = labels > 0
    areas = lung.reshape(lung.shape[0], -1).sum(axis=1)
    occupied = np.flatnonzero(areas)
    if occupied.size == 0:
        return Flag("slice_discontinuity", None, True, "1-dice", "no lung on any slice")
    first, last = int(occupied[0]), int(occupied[-1])
    gaps = int(np.count_nonzero(areas[first:last + 1] == 0))
    floor = 0.1 * float(areas.max())
    worst, worst_at = 0.0, -1
    for z in range(first, last):
        if areas[z] < floor or areas[z + 1] < floor:
            continue
        overlap = np.count_nonzero(lung[z] & lung[z + 1])
        change = 1.0 - 2.0 * overlap / float(areas[z] + areas[z + 1])
        if change > worst:
            worst, worst_at = change, z
    flagged = worst > limits.discontinuity_max or gaps > 0
    message = (f"largest change {worst:.2f} between slices {worst_at} and {worst_at + 1}; {gaps} empty slice(s)"
               f" inside the lungs" if flagged else f"largest adjacent-slice change {worst:.2f}")
    return Flag("slice_discontinuity", worst, flagged, "1-dice", message,
                {"gaps": gaps, "worst_slice": worst_at, "extent": [first, last]})


def mean_entropy(probabilities: np.ndarray) -> float:
    """Mean normalised predictive entropy (entropy / log C, in [0, 1]) of probabilities ``(C, ...)``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    return float(np.mean(-np.sum(p * np.log(p), axis=0)) / np.log(p.shape[0]))


def model_confidence(confidence: float | None, entropy: float | None, limits: Thresholds) -> Flag:
    """The model's confidence in [0, 1] and/or mean normalised entropy in [0, 1]; low confidence is flagged.

    A person's revision or a method without a score gives ``None`` (not flagged).
    """
    if confidence is None and entropy is None:
        return Flag("confidence", None, False, "score", "no model score")
    reasons: list[str] = []
    if confidence is not None and confidence < limits.confidence_min:
        reasons.append(f"confidence {confidence:.3f} below {limits.confidence_min}")
    if entropy is not None and entropy > limits.entropy_max:
        reasons.append(f"mean normalised entropy {entropy:.3f} above {limits.entropy_max}")
    value = confidence if confidence is not None else 1.0 - float(entropy or 0.0)
    message = "; ".join(reasons) or "model confident"
    return Flag("confidence", value, bool(reasons), "score", message, {"entropy": entropy, "confidence": confidence})


GAS_HU = -950.0
"""Gas below this HU: the emphysema threshold, so a gas pocket is what the emphysema index counts."""


def _gas_below_base(lung: np.ndarray, volume_hu: np.ndarray, min_voxels: int) -> np.ndarray:
    """Voxels of 26-connected gas pockets (< ``GAS_HU``) of one lung lying mostly below its base.

    The base is the lowest non-gas voxel of the lung in each (H, W) column; D is assumed to run
    toward superior (canonical and axial instance order), so "below" is a lower slice index.
    """
    aerated = lung & (volume_hu >= GAS_HU)
    gas = lung & (volume_hu < GAS_HU)
    if not aerated.any() or not gas.any():
        return np.zeros(lung.shape, dtype=bool)
    columns = aerated.any(axis=0)
    base = np.where(columns, np.argmax(aerated, axis=0), lung.shape[0])  # no aerated lung: all of it is below
    below = np.arange(lung.shape[0])[:, None, None] < base[None]
    pockets, count = ndimage.label(gas, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(pockets.ravel(), minlength=count + 1)
    under = np.bincount(pockets[below & gas], minlength=count + 1)
    keep = (sizes >= min_voxels) & (under >= 0.5 * sizes)
    keep[0] = False
    return keep[pockets]


def gas_below_base(labels: np.ndarray, volume_hu: np.ndarray, spacing: tuple[float, ...],
                   min_ml: float = 2.0) -> Flag:
    """Gas pockets (< −950 HU, at least ``min_ml`` each) inside a lung mask below that lung's base.

    Gas under a diaphragm dome (stomach, colon, free air) taken for lung inflates the lung's
    volume and its emphysema index; a person should look.

    Args:
        labels: ``(D, H, W)`` label map, D toward superior.
        volume_hu: ``(D, H, W)`` HU on the same grid.
        spacing: ``(D, H, W)`` mm.
        min_ml: smallest pocket counted, in mL.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    per_side = {}
    for name, value in (("right", RIGHT), ("left", LEFT)):
        pockets = _gas_below_base(labels == value, volume_hu, max(1, int(np.ceil(min_ml / voxel_ml))))
        per_side[name] = round(float(np.count_nonzero(pockets)) * voxel_ml, 1)
    total = sum(per_side.values())
    message = (f"gas below the lung base inside the mask: right {per_side['right']} mL, left {per_side['left']} mL"
               " (stomach or bowel taken for lung: volume and emphysema index overestimated)"
               if total else "no gas pocket below a lung base")
    return Flag("gas_below_base", total, total > 0, "mL", message, {"per_side_ml": per_side})


def side_plausibility(labels: np.ndarray, volume_hu: np.ndarray, spacing: tuple[float, ...],
                      max_ratio: float = 1.35, max_emphysema_ratio: float = 3.0,
                      min_emphysema_gap: float = 0.02) -> Flag:
    """A lung's volume or emphysema index implausible against the other side's.

    Flagged when one lung's volume exceeds ``max_ratio`` times the other's and the volume shows
    no reason (the smaller lung is not denser by 100 HU or more: collapse, consolidation or an
    effusion pressing on it), or when one lung's emphysema index (fraction < −950 HU) exceeds
    ``max_emphysema_ratio`` times the other's by at least ``min_emphysema_gap`` and half or more
    of its low-attenuation voxels lie in gas pockets below its base (not emphysema spread
    through the lung, which would explain it).

    Args:
        labels: ``(D, H, W)`` label map, D toward superior.
        volume_hu: ``(D, H, W)`` HU on the same grid.
        spacing: ``(D, H, W)`` mm.
    """
    lungs = {name: labels == value for name, value in (("right", RIGHT), ("left", LEFT))}
    counts = {name: int(np.count_nonzero(m)) for name, m in lungs.items()}
    if min(counts.values()) == 0:
        return Flag("side_plausibility", None, False, "ratio", "a lung is missing: see empty_side")
    mean_hu = {name: float(volume_hu[m].mean()) for name, m in lungs.items()}
    low = {name: int(np.count_nonzero(m & (volume_hu < GAS_HU))) for name, m in lungs.items()}
    index = {name: low[name] / counts[name] for name in lungs}
    big, small = sorted(lungs, key=lambda n: -counts[n])
    ratio = counts[big] / counts[small]
    reasons: list[str] = []
    if ratio > max_ratio and mean_hu[small] < mean_hu[big] + 100.0:
        reasons.append(f"{big} lung {ratio:.2f}x the {small} lung's volume, and the {small} lung is not denser "
                       f"({mean_hu[small]:.0f} vs {mean_hu[big]:.0f} HU)")
    high, other = sorted(lungs, key=lambda n: -index[n])
    if index[high] > max_emphysema_ratio * index[other] and index[high] - index[other] >= min_emphysema_gap:
        min_voxels = max(1, int(np.ceil(2000.0 / float(np.prod(spacing)))))  # pockets of 2 mL or more
        in_pockets = int(np.count_nonzero(_gas_below_base(lungs[high], volume_hu, min_voxels)))
        if in_pockets >= 0.5 * low[high]:
            reasons.append(f"{high} emphysema index {index[high]:.3f} vs {index[other]:.3f}, "
                           f"{in_pockets / low[high]:.0%} of it in gas below the base")
    detail = {"volume_ratio": round(ratio, 3), "mean_hu": {k: round(v, 1) for k, v in mean_hu.items()},
              "emphysema_index": {k: round(v, 4) for k, v in index.items()}}
    message = "; ".join(reasons) or f"volume ratio {ratio:.2f}; emphysema index right {index['right']:.3f}, " \
                                    f"left {index['left']:.3f}"
    return Flag("side_plausibility", round(ratio, 3), bool(reasons), "ratio", message, detail)


def evaluate(
    labels: np.ndarray,
    modality: str,
    spacing: tuple[float, ...] | None = None,
    confidence: float | None = None,
    entropy: float | None = None,
    thresholds: Thresholds | None = None,
    measured: np.ndarray | None = None,
    volume_hu: np.ndarray | None = None,
) -> list[Flag]:
    """Run every check that applies to ``modality`` (``"cxr"`` or ``"ct"``).

    Args:
        labels: ``(H, W)`` for ``cxr`` or ``(D, H, W)`` for ``ct``, uint8 label map.
        modality: ``"cxr"`` or ``"ct"``.
        spacing: spacing in mm in array axis order; ``None`` when unknown (X-ray without pixel spacing).
        confidence: model confidence in [0, 1], if the mask came from a model.
        entropy: mean normalised predictive entropy in [0, 1], if known.
        thresholds: plausible ranges; the modality's defaults when ``None``.
        measured: the same label map on a regular grid, for the size and ratio checks, when
            ``labels`` is not on one (a CT series with missing instances or a gantry tilt,
            :func:`annotation.labelmaps.to_regular_grid`); ``labels`` when ``None``. The other checks
            keep ``labels``, so that slice numbers in their messages are the viewer's.
        volume_hu: CT only, ``(D, H, W)`` HU on the grid of ``labels`` (D toward superior); adds
            :func:`gas_below_base` and :func:`side_plausibility` (they need ``spacing``).

    Returns:
        The flags, in a fixed order.

    Raises:
        QCInputError: unknown modality or a label map of the wrong dimensionality.
    """
    _check_labels(labels, modality)
    limits = thresholds or DEFAULT_THRESHOLDS[modality]
    measured = labels if measured is None else measured
    flags = [count_components(labels), lung_size(measured, spacing, limits), side_ratio(measured, limits),
             border_contact(labels, limits), empty_side(labels)]
    if modality == "ct":
        flags.append(slice_discontinuity(labels, limits))
        if volume_hu is not None and spacing is not None:  # issue 24: gas below a base, implausible sides
            if volume_hu.shape != labels.shape:
                raise QCInputError(f"CT volume {volume_hu.shape} is not on the label map's grid {labels.shape}")
            flags += [gas_below_base(labels, volume_hu, spacing), side_plausibility(labels, volume_hu, spacing)]
    flags.append(model_confidence(confidence, entropy, limits))
    return flags


def priority(flags: list[Flag]) -> float:
    """Review priority: number of raised flags plus the model's doubt (``1 - confidence``); higher first."""
    score = float(sum(f.flagged for f in flags))
    for f in flags:
        if f.name == "confidence" and f.value is not None:
            score += 1.0 - min(max(float(f.value), 0.0), 1.0)
    return score
