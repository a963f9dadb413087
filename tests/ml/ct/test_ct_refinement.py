"""The HU boundary refinement of the CT model: a rim threshold that follows the voxel size."""

from __future__ import annotations

import numpy as np
import pytest

from ml.ct.inference import HU_REFINEMENT, HURefinement, upsample_labels
from ml.ct.preprocessing import Box


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


def test_refined_rim_voxels_take_the_side_of_the_lung_they_border() -> None:
    """Upsampled ×2, the refined rim lies past the lung's own indicator: it must stay left lung."""
    probability, labels, hu_small = _rim_case(rim_hu=-330)
    labels = np.where(labels > 0, 2, 0).astype(np.uint8)  # a left lung
    hu = np.repeat(np.repeat(hu_small, 2, axis=1), 2, axis=2)  # the input grid: 64 x 64
    out = upsample_labels(probability, labels, Box(0, 64, 0, 64), hu.shape, hu, HU_REFINEMENT.at((3.0, 1.0, 1.0)))
    assert (out[:, 16:48, 16:48] == 2).all()
    assert (out[:, 15, 15:49] == 2).all(), "the third-air rim is lung on 1 mm voxels"
    assert not (out == 1).any(), "no voxel of the left lung's rim may fall to the right lung"


def test_a_speck_only_the_refinement_made_is_dropped_a_drawn_piece_is_kept() -> None:
    probability, labels, hu = _rim_case(rim_hu=40)  # a soft-tissue rim: not lung
    # an air speck one voxel off the rim, in the uncertain band: HU alone would make it lung
    probability[:, 12:14, 25] = 0.4
    hu[:, 12:14, 25] = -800
    # a small piece the network drew, away from the main lung
    labels[:, 2:4, 2:4] = 1
    probability[:, 2:4, 2:4] = 0.9
    hu[:, 2:4, 2:4] = -800
    out = upsample_labels(probability, labels, Box(0, 32, 0, 32), hu.shape, hu, HU_REFINEMENT.at((3.0, 1.0, 1.0)))
    assert not out[:, 12:14, 25].any(), "a speck without a certain voxel is not lung"
    assert (out[:, 2:4, 2:4] == 1).all(), "a piece the network drew stays"
    assert (out[:, 8:24, 8:24] == 1).all()


def test_without_hu_the_labels_are_only_resized() -> None:
    """No refinement (and no speck clearing) without the volume's HU: both lungs come back whole."""
    probability, labels, hu = _rim_case(rim_hu=-330)
    labels[:, 8:24, 16:24] = 2
    out = upsample_labels(probability, labels, Box(0, 32, 0, 32), hu.shape, None, HU_REFINEMENT.at((3.0, 1.0, 1.0)))
    assert (out[:, 8:24, 8:16] == 1).all() and (out[:, 8:24, 16:24] == 2).all()
