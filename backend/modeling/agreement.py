"""Agreement of two lung label maps (per lung Dice and HD95), thin over :mod:`ml.metrics`.

The backend imports :mod:`ml` only through :mod:`modeling`; annotation uses these figures to say
how far a person's mask moved from the model's proposal and how well two readers agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml import ShapeMismatchError, dice, hd95, missing_structure_distance

RIGHT, LEFT = 1, 2


@dataclass(frozen=True)
class Agreement:
    """Per-lung agreement of two label maps ``a`` and ``b`` of one shape.

    Attributes:
        dice_right / dice_left: Dice of each lung (1.0 when both are empty there).
        hd95_right / hd95_left: 95th-percentile symmetric Hausdorff distance of each lung, in mm
            where the spacing is known (``unit`` ``"mm"``), else pixels (``"px"``).
        added / removed / relabelled: voxels lung in ``b`` only, in ``a`` only, and on the other side.
        total: number of voxels.
    """

    dice_right: float
    dice_left: float
    hd95_right: float
    hd95_left: float
    unit: str
    added: int
    removed: int
    relabelled: int
    total: int

    @property
    def dice(self) -> float:
        return (self.dice_right + self.dice_left) / 2.0

    @property
    def hd95(self) -> float:
        return (self.hd95_right + self.hd95_left) / 2.0

    @property
    def changed_fraction(self) -> float:
        return (self.added + self.removed + self.relabelled) / self.total if self.total else 0.0


def _crop_to_lungs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps cut to the bounding box of their lungs plus one voxel (surface distances are unchanged;
    the distance transforms of a CT then cost a fraction of the whole volume's)."""
    union = (a > 0) | (b > 0)
    if not union.any():
        return a, b
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(x for x in range(union.ndim) if x != axis)))
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return a[tuple(box)], b[tuple(box)]


def compare(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...] | None = None) -> Agreement:
    """Agreement of label maps ``a`` (e.g. the proposal) and ``b`` (e.g. the final mask).

    Args:
        a, b: ``(H, W)`` or ``(D, H, W)`` uint8 label maps (0 background, 1 right, 2 left lung).
        spacing: mm per array axis, or ``None`` (distances in pixels then).

    Raises:
        ml.ShapeMismatchError: shapes or spacing do not fit.
    """
    if np.shape(a) != np.shape(b):
        raise ShapeMismatchError(f"label maps of shapes {np.shape(a)} and {np.shape(b)} cannot be compared")
    shape = tuple(np.shape(a))
    total = int(np.prod(shape))
    a, b = _crop_to_lungs(np.asarray(a), np.asarray(b))
    scores = {}
    for name, value in (("right", RIGHT), ("left", LEFT)):
        pa, pb = a == value, b == value
        scores[f"dice_{name}"] = dice(pb, pa)
        if pa.any() != pb.any():  # a lung missing on one side: charged the whole array's diagonal
            scores[f"hd95_{name}"] = missing_structure_distance(shape, spacing)
        else:
            scores[f"hd95_{name}"] = hd95(pb, pa, spacing)
    lung_a, lung_b = a > 0, b > 0
    return Agreement(  # counts do not depend on the crop (outside it both maps are background)
        **scores, unit="px" if spacing is None else "mm",
        added=int(np.count_nonzero(lung_b & ~lung_a)), removed=int(np.count_nonzero(lung_a & ~lung_b)),
        relabelled=int(np.count_nonzero(lung_a & lung_b & (a != b))), total=total)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where ``b`` differs from ``a``: 1 added lung (or changed side), 2 removed lung, 0 unchanged; same shape."""
    out = np.zeros(a.shape, np.uint8)
    out[(b > 0) & (a != b)] = 1
    out[(a > 0) & (b == 0)] = 2
    return out
