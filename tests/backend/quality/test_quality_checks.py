"""Hand-checked values for the pure QC checks (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from quality import checks


def _two_lungs_2d() -> np.ndarray:
    """20x20 image: right lung (label 1) 6x4=24 px on the image left, left lung 6x3=18 px."""
    labels = np.zeros((20, 20), np.uint8)
    labels[5:11, 3:7] = 1
    labels[5:11, 12:15] = 2
    return labels


def test_components_counts_per_side():
    labels = _two_lungs_2d()
    assert checks.count_components(labels).flagged is False
    labels[15, 15] = 2  # a speck of "left lung"
    flag = checks.count_components(labels)
    assert flag.value == 3.0 and flag.flagged and flag.detail["per_side"] == {"right": 1, "left": 2}


def test_side_sizes_in_mm2_and_ml():
    labels = _two_lungs_2d()
    assert checks.side_sizes(labels, (0.5, 2.0)) == (24.0, 18.0, "mm2")
    assert checks.side_sizes(labels, None) == (24.0, 18.0, "px")
    volume = np.stack([labels] * 5)  # 5 slices of 10 mm³ voxels
    right, left, unit = checks.side_sizes(volume, (2.0, 1.0, 5.0))
    assert (right, left, unit) == (24 * 5 * 10 / 1000, 18 * 5 * 10 / 1000, "mL")
    with pytest.raises(checks.QCInputError):
        checks.side_sizes(volume, (1.0, 1.0))


def test_ratio_border_and_empty_side():
    labels = _two_lungs_2d()
    limits = checks.DEFAULT_THRESHOLDS["cxr"]
    assert checks.side_ratio(labels, limits).value == pytest.approx(24 / 18)
    assert checks.border_contact(labels, limits).flagged is False
    labels[0, 4] = 1
    border = checks.border_contact(labels, limits)
    assert border.flagged and border.detail["pixels"] == 1 and border.value == pytest.approx(1 / 80)
    labels[labels == 2] = 0
    empty = checks.empty_side(labels)
    assert empty.value == 1.0 and empty.detail["missing"] == ["left"]
    assert checks.side_ratio(labels, limits).value is None


def test_lung_size_fraction_for_xray():
    labels = _two_lungs_2d()  # 42 / 400 = 10.5 % of the image
    flag = checks.lung_size(labels, None, checks.DEFAULT_THRESHOLDS["cxr"])
    assert flag.flagged is False and flag.detail["fraction"] == pytest.approx(0.105)
    tiny = np.zeros((20, 20), np.uint8)
    tiny[5, 5], tiny[5, 15] = 1, 2
    assert checks.lung_size(tiny, None, checks.DEFAULT_THRESHOLDS["cxr"]).flagged


def test_slice_discontinuity_finds_a_jump_and_a_gap():
    volume = np.zeros((6, 10, 10), np.uint8)
    volume[:, 2:6, 1:4] = 1
    volume[:, 2:6, 6:9] = 2
    limits = checks.DEFAULT_THRESHOLDS["ct"]
    smooth = checks.slice_discontinuity(volume, limits)
    assert smooth.value == 0.0 and not smooth.flagged
    volume[3] = 0
    volume[3, 6:10, 0:4] = 1  # shifted: no overlap with its neighbours
    volume[3, 6:10, 6:9] = 2
    jump = checks.slice_discontinuity(volume, limits)
    assert jump.flagged and jump.value == pytest.approx(1.0) and jump.detail["worst_slice"] == 2
    volume[3] = 0
    gap = checks.slice_discontinuity(volume, limits)
    assert gap.flagged and gap.detail["gaps"] == 1


def test_entropy_and_confidence():
    certain = np.stack([np.ones((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))])
    assert checks.mean_entropy(certain) == pytest.approx(0.0, abs=1e-9)
    uniform = np.full((3, 4, 4), 1 / 3)
    assert checks.mean_entropy(uniform) == pytest.approx(1.0)
    limits = checks.DEFAULT_THRESHOLDS["cxr"]
    assert checks.model_confidence(0.5, None, limits).flagged
    assert not checks.model_confidence(0.95, 0.05, limits).flagged
    assert checks.model_confidence(None, None, limits).value is None


def test_evaluate_runs_the_modality_checks_and_rejects_bad_input():
    flags = checks.evaluate(_two_lungs_2d(), "cxr", confidence=0.9)
    assert [f.name for f in flags] == ["components", "lung_size", "side_ratio", "border", "empty_side", "confidence"]
    assert checks.priority(flags) == pytest.approx(0.1)
    ct_flags = checks.evaluate(np.stack([_two_lungs_2d()] * 3), "ct", spacing=(3.0, 1.0, 1.0))
    assert "slice_discontinuity" in [f.name for f in ct_flags]
    with pytest.raises(checks.QCInputError):
        checks.evaluate(_two_lungs_2d(), "ct")
    # an irregular series: sizes come from the regular grid, slice checks from the stored slices
    stored = np.stack([_two_lungs_2d()] * 3)
    stored[1] = 0  # an empty stored slice inside the lungs' extent
    on_grid = np.concatenate([stored[:1], stored[:1], stored[1:]])  # 4 grid slices
    by_name = {f.name: f for f in checks.evaluate(stored, "ct", spacing=(3.0, 1.0, 1.0), measured=on_grid)}
    right, left, _ = checks.side_sizes(on_grid, (3.0, 1.0, 1.0))
    assert by_name["lung_size"].value == pytest.approx(right + left)
    assert by_name["lung_size"].value > sum(checks.side_sizes(stored, (3.0, 1.0, 1.0))[:2])
    assert by_name["slice_discontinuity"].detail["extent"] == [0, 2]  # the stored numbering (on the grid: [0, 3])
    with pytest.raises(checks.QCInputError):
        checks.evaluate(_two_lungs_2d(), "mri")
