"""HD95 vs Hausdorff (max) vs ASSD, hand-checked on a geometry where all three differ.

How ml/metrics.py measures (read from the code):

* surface of a mask = the mask minus its binary erosion (3x3 structuring element, i.e. full
  connectivity, pixels outside the image count as background);
* ``surface_distances`` returns two directed arrays: for every surface pixel of ``pred`` the
  Euclidean distance (pixel centres, scaled per axis by ``spacing``) to the nearest surface pixel
  of ``target``, and vice versa;
* HD95 = max of the two directed 95th percentiles (``np.percentile``, linear interpolation), NOT
  the percentile of the pooled distances; ASSD = mean of the pooled distances of both directions.

Geometry: ``target`` is a filled 5x5 square (rows 10..14, cols 10..14). Its surface is the ring
of 4 * (5 - 1) = 16 pixels (the erosion leaves the inner 3x3). ``pred`` is the same square plus
ONE isolated pixel (a single pixel erodes away, so it is a surface pixel too), far from it:

* pred -> target: the 16 ring pixels lie on target's ring (distance 0) and the isolated pixel is
  D from the nearest ring pixel, so a = [0] * 16 + [D] (17 values);
* target -> pred: every ring pixel of target is also on pred's surface: b = [0] * 16.

So Hausdorff = max = D; directed 95th percentile of a = value at rank 0.95 * 16 = 15.2 of the
sorted a, i.e. 0.8 * a[15] + 0.2 * a[16] = 0.2 * D, and of b = 0 -> HD95 = 0.2 * D;
ASSD = D / (17 + 16) = D / 33. (The 95th percentile of the 33 pooled values would be 0.)
"""

from __future__ import annotations

import numpy as np
import pytest

from ml.metrics import assd, binary_metrics, hd95, per_label_metrics, surface_distances

D = 10  # offset of the isolated pixel from the square's nearest edge pixel, in pixels


def _square() -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[10:15, 10:15] = True
    return mask


def _with_far_pixel(direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target): pred = target + one pixel D pixels to the right of (or below) the square."""
    target = _square()
    pred = target.copy()
    if direction == "right":  # same row as the middle of the right edge (12, 14)
        pred[12, 14 + D] = True
    else:  # same column as the middle of the bottom edge (14, 12)
        pred[14 + D, 12] = True
    return pred, target


def _hausdorff(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    a, b = surface_distances(pred, target, spacing)
    return float(max(a.max(), b.max()))


def test_surface_distance_arrays_match_the_hand_count() -> None:
    pred, target = _with_far_pixel("right")
    a, b = surface_distances(pred, target)
    assert a.size == 17 and b.size == 16  # 16-pixel ring (+ the isolated pixel for pred)
    assert sorted(a.tolist()) == [0.0] * 16 + [float(D)]
    assert b.tolist() == [0.0] * 16


def test_hd95_hausdorff_and_assd_differ_as_computed_by_hand() -> None:
    pred, target = _with_far_pixel("right")
    hausdorff = _hausdorff(pred, target)
    h95 = hd95(pred, target)
    mean_surface = assd(pred, target)
    assert hausdorff == pytest.approx(10.0)
    assert h95 == pytest.approx(0.2 * D)  # 2.0
    assert mean_surface == pytest.approx(D / 33)  # 0.30303...
    assert mean_surface < h95 < hausdorff
    # symmetric: swapping prediction and reference changes nothing
    assert hd95(target, pred) == pytest.approx(h95)
    assert assd(target, pred) == pytest.approx(mean_surface)
    # the same numbers through binary_metrics and per_label_metrics
    metrics = binary_metrics(pred, target)
    assert metrics["hd95"] == pytest.approx(2.0) and metrics["assd"] == pytest.approx(D / 33)
    labels = per_label_metrics(pred.astype(np.uint8), target.astype(np.uint8), {1: "lung"}, union_name=None)
    assert labels["lung_hd95"] == pytest.approx(2.0) and labels["lung_assd"] == pytest.approx(D / 33)


def test_identical_masks_have_zero_distances() -> None:
    target = _square()
    assert hd95(target, target) == 0.0 and assd(target, target) == 0.0


@pytest.mark.parametrize(
    ("direction", "scale"),
    [
        ("right", 1.0),  # a column offset: the column spacing is 1.0 -> distances unchanged
        ("down", 2.0),  # a row offset: the row spacing is 2.0 -> distances doubled
    ],
)
def test_spacing_scales_distances_per_axis(direction: str, scale: float) -> None:
    """spacing = (row, column) = (2.0, 1.0). The nearest target surface pixel stays the same
    one (the edge-middle pixel straight across; any other ring pixel adds a perpendicular
    component), so the far distance becomes scale * D and the zeros stay zeros."""
    spacing = (2.0, 1.0)
    pred, target = _with_far_pixel(direction)
    # without spacing the two directions are the same geometry
    assert hd95(pred, target) == pytest.approx(0.2 * D)
    assert assd(pred, target) == pytest.approx(D / 33)
    far = scale * D
    assert _hausdorff(pred, target, spacing) == pytest.approx(far)
    assert hd95(pred, target, spacing) == pytest.approx(0.2 * far)
    assert assd(pred, target, spacing) == pytest.approx(far / 33)
    metrics = binary_metrics(pred, target, spacing=spacing)
    assert metrics["hd95"] == pytest.approx(0.2 * D)  # pixels
    assert metrics["hd95_mm"] == pytest.approx(0.2 * far)  # spacing units
    assert metrics["assd_mm"] == pytest.approx(far / 33)

