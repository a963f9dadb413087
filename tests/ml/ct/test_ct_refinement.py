"""The HU boundary refinement of the CT model: a rim threshold that follows the voxel size."""

from __future__ import annotations

import numpy as np
import pytest

from ml.ct.inference import HU_REFINEMENT, HURefinement, upsample_labels
from ml.ct.preprocess import Box


def test_fixed_threshold_is_used_whatever_the_spacing() -> None:
    refine = HURefinement(threshold_hu=-400.0)
    assert refine.threshold_for((5.0, 0.7, 0.7)) == -400.0
    assert refine.threshold_for((5.0, 4.0, 4.0)) == -400.0


def test_rim_offset_threshold_hand_checked() -> None:
    refine = HURefinement(rim_offset_mm=0.3)
    # -1000 * (0.5 - 0.3 / v): 1 mm -> 20 % air, 4 mm -> 42.5 % air, 3 x 2 mm -> sqrt(6) mm in plane
    assert refine.threshold_for((3.0, 1.0, 1.0)) == pytest.approx(-200.0)
    assert refine.threshold_for((3.0, 4.0, 4.0)) == pytest.approx(-425.0)
    assert refine.threshold_for((3.0, 3.0, 2.0)) == pytest.approx(-1000.0 * (0.5 - 0.3 / np.sqrt(6.0)))
    # the slice thickness plays no part
    assert refine.threshold_for((1.0, 4.0, 4.0)) == refine.threshold_for((5.0, 4.0, 4.0))


def test_rim_offset_threshold_is_clipped() -> None:
    refine = HURefinement(rim_offset_mm=0.3)
    assert refine.threshold_for((3.0, 0.4, 0.4)) == -100.0  # never into soft tissue
    assert HURefinement(rim_offset_mm=0.0).threshold_for((3.0, 1.0, 1.0)) == -500.0  # never beyond 50 % air
    assert refine.threshold_for((3.0, 400.0, 400.0)) >= -500.0


def test_at_fixes_the_threshold_for_a_spacing() -> None:
    fixed = HU_REFINEMENT.at((3.0, 4.0, 4.0))
    assert fixed.rim_offset_mm is None
    assert fixed.threshold_hu == pytest.approx(HU_REFINEMENT.threshold_for((3.0, 4.0, 4.0)))
    assert (fixed.margin, fixed.merge_air, fixed.merge_air_hu) == (
        HU_REFINEMENT.margin, HU_REFINEMENT.merge_air, HU_REFINEMENT.merge_air_hu)


@pytest.mark.parametrize("kwargs", [{}, {"threshold_hu": -300.0, "rim_offset_mm": 0.3}, {"rim_offset_mm": -0.1}])
def test_refinement_needs_exactly_one_valid_rule(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        HURefinement(**kwargs)


def _rim_case(rim_hu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A lung square (−850 HU) with a one-voxel rim of ``rim_hu`` that the network is unsure of."""
    shape = (2, 32, 32)
    lung = np.zeros(shape, dtype=bool)
    lung[:, 8:24, 8:24] = True
    rim = np.zeros(shape, dtype=bool)
    rim[:, 7:25, 7:25] = True
    rim &= ~lung
    probability = np.where(lung, 0.95, np.where(rim, 0.4, 0.02)).astype(np.float32)
    labels = np.where(lung, 1, 0).astype(np.uint8)
    hu = np.where(lung, -850, np.where(rim, rim_hu, 40)).astype(np.int16)
    return probability, labels, hu


@pytest.mark.parametrize(("spacing", "rim_is_lung"), [((3.0, 1.0, 1.0), True), ((3.0, 4.0, 4.0), False)])
def test_a_third_air_rim_is_lung_on_fine_voxels_only(spacing: tuple[float, float, float], rim_is_lung: bool) -> None:
    probability, labels, hu = _rim_case(rim_hu=-330)  # about a third air
    box = Box(0, 32, 0, 32)
    out = upsample_labels(probability, labels, box, hu.shape, hu, HU_REFINEMENT.at(spacing))
    assert (out[:, 8:24, 8:24] == 1).all()
    assert bool((out[:, 7, 7:25] == 1).all()) is rim_is_lung
    assert not out[:, :6].any() and not out[:, 26:].any()


def test_upsample_refuses_an_unresolved_rim_rule() -> None:
    probability, labels, hu = _rim_case(rim_hu=-330)
    with pytest.raises(ValueError, match="at\\(spacing\\)"):
        upsample_labels(probability, labels, Box(0, 32, 0, 32), hu.shape, hu, HU_REFINEMENT)
