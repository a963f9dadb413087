"""CT QC with the HU volume (issue 24): gas below a lung base, implausible sides. Hand-built volumes."""

from __future__ import annotations

import numpy as np
import pytest

from quality import checks

SPACING = (2.0, 2.0, 2.0)  # 8 µL voxels: 125 voxels per mL


def _chest() -> tuple[np.ndarray, np.ndarray]:
    """Two equal box lungs (-850 HU) in soft tissue; D runs toward superior."""
    labels = np.zeros((40, 30, 50), np.uint8)
    labels[10:35, 5:25, 5:22] = 1
    labels[10:35, 5:25, 28:45] = 2
    volume = np.full(labels.shape, 40.0, np.float32)
    volume[labels > 0] = -850.0
    return labels, volume


def test_a_gas_pocket_below_a_lung_base_is_flagged_with_its_volume() -> None:
    labels, volume = _chest()
    assert not checks.gas_below_base(labels, volume, SPACING).flagged
    labels[2:8, 10:20, 30:40] = 2  # the stomach under the left dome taken for lung: 600 voxels = 4.8 mL
    volume[2:8, 10:20, 30:40] = -1000.0
    labels[8:10, 14:16, 34:36] = 2  # joined through the diaphragm
    flag = checks.gas_below_base(labels, volume, SPACING)
    assert flag.flagged and flag.value == pytest.approx(4.8) and flag.detail["per_side_ml"]["right"] == 0.0
    assert "overestimated" in flag.message


def test_emphysema_spread_through_a_lung_is_not_gas_below_the_base() -> None:
    labels, volume = _chest()
    rng = np.random.default_rng(0)
    left = labels == 2
    volume[left & (rng.random(labels.shape) < 0.2)] = -980.0  # 20 % low attenuation, all heights
    assert not checks.gas_below_base(labels, volume, SPACING).flagged
    flag = checks.side_plausibility(labels, volume, SPACING)
    assert not flag.flagged, "an emphysema index asymmetry spread through the lung is explained"
    assert flag.detail["emphysema_index"]["left"] == pytest.approx(0.2, abs=0.01)


def test_an_emphysema_index_made_by_gas_below_the_base_is_implausible() -> None:
    labels, volume = _chest()
    labels[0:10, 5:25, 28:45] = 2  # 3400 voxels of gas under the left lung taken for it
    volume[0:10, 5:25, 28:45] = -1000.0
    flag = checks.side_plausibility(labels, volume, SPACING)
    assert flag.flagged and "left emphysema index" in flag.message
    assert flag.value == pytest.approx((10 * 20 * 17 + 25 * 20 * 17) / (25 * 20 * 17), abs=1e-3)


def test_a_lung_larger_than_135_percent_of_the_other_is_flagged_unless_the_smaller_is_denser() -> None:
    labels, volume = _chest()
    labels[10:35, 5:25, 22:26] = 1  # right lung grows to 21 columns: 21/17 = 1.24, plausible
    volume[labels == 1] = -850.0
    assert not checks.side_plausibility(labels, volume, SPACING).flagged
    labels[10:35, 5:25, 38:45] = 0  # left lung shrinks to 10 columns: 2.1x
    volume[10:35, 5:25, 38:45] = 40.0
    flag = checks.side_plausibility(labels, volume, SPACING)
    assert flag.flagged and flag.value == pytest.approx(2.1) and "not denser" in flag.message
    volume[labels == 2] = -650.0  # the smaller lung is consolidated: the volume shows why
    assert not checks.side_plausibility(labels, volume, SPACING).flagged


def test_evaluate_adds_the_hu_checks_for_ct_only_with_a_volume_on_the_same_grid() -> None:
    labels, volume = _chest()
    names = [f.name for f in checks.evaluate(labels, "ct", spacing=SPACING, volume_hu=volume)]
    assert "gas_below_base" in names and "side_plausibility" in names
    assert "gas_below_base" not in [f.name for f in checks.evaluate(labels, "ct", spacing=SPACING)]
    with pytest.raises(checks.QCInputError, match="grid"):
        checks.evaluate(labels, "ct", spacing=SPACING, volume_hu=volume[:-1])
