"""The reference-surface ceiling: an oracle that keeps the reference's interior and thresholds its surface band."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ml.experiments.ct_ceiling import boundary_ceiling, main
from ml.ct.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=(48, 96, 96), spacing=(3.0, 1.0, 1.0), noise_hu=0.0)


def test_a_reference_that_follows_the_image_has_ceiling_one(phantom) -> None:
    right = phantom.labels == 1
    found = boundary_ceiling(phantom.volume_hu, right, phantom.spacing, band_mm=2.5)
    # only the bronchus entering the hilum (air, not in the labels) is given to the lung
    assert found["dice"] > 0.985
    assert -850.0 < found["threshold_hu"] <= 40.0


def test_a_contour_drawn_outside_the_pleura_lowers_the_ceiling(phantom) -> None:
    right = phantom.labels == 1
    # drawn 2 voxels into the chest wall: no HU threshold can reproduce that surface
    widened = ndimage.binary_dilation(right, structure=np.ones((1, 3, 3), bool), iterations=2)
    found = boundary_ceiling(phantom.volume_hu, widened, phantom.spacing, band_mm=2.5)
    assert found["dice"] < 0.97
    # a band too narrow to reach the drawn surface's distance to the lung sees less of it
    exact = boundary_ceiling(phantom.volume_hu, widened, phantom.spacing, band_mm=1.0)
    assert exact["dice"] > found["dice"]


def test_the_other_lung_is_never_given_to_this_one(phantom) -> None:
    right, left = phantom.labels == 1, phantom.labels == 2
    # the lungs are 10 mm apart: a 12 mm band reaches the left lung, which is air like the right one
    near = boundary_ceiling(phantom.volume_hu, right, phantom.spacing, band_mm=12.0, thresholds_hu=(-500.0,))
    kept = boundary_ceiling(phantom.volume_hu, right, phantom.spacing, band_mm=12.0, thresholds_hu=(-500.0,), other=left)
    assert kept["dice"] > near["dice"]


def test_bad_input_is_refused(phantom) -> None:
    right = phantom.labels == 1
    with pytest.raises(ValueError, match="narrower than the in-plane voxel"):
        boundary_ceiling(phantom.volume_hu, right, (3.0, 4.0, 4.0), band_mm=2.5)
    with pytest.raises(ValueError, match="empty"):
        boundary_ceiling(phantom.volume_hu, np.zeros_like(right), phantom.spacing)


def test_cli_needs_a_manifest(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--split", "all"])
    assert "--manifest" in capsys.readouterr().err
