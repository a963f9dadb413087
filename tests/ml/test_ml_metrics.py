"""Metrics on hand-checked arrays (2-D and 3-D)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.metrics import (
    MetricTable,
    ShapeMismatchError,
    assd,
    dice,
    hd95,
    iou,
    per_label_metrics,
    pixel_accuracy,
    precision,
    recall,
    summarize,
)


def squares() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True  # 16 px
    b = np.zeros((10, 10), bool)
    b[3:7, 2:6] = True  # 16 px, 12 shared
    return a, b


def test_overlap_metrics_hand_checked() -> None:
    a, b = squares()
    assert dice(a, b) == pytest.approx(24 / 32)
    assert iou(a, b) == pytest.approx(12 / 20)
    assert pixel_accuracy(a, b) == pytest.approx(92 / 100)
    assert precision(a, b) == pytest.approx(12 / 16)
    assert recall(a, b) == pytest.approx(12 / 16)


def test_precision_recall_asymmetric() -> None:
    pred = np.zeros((4, 4), bool)
    pred[:2] = True  # 8 px
    ref = np.zeros((4, 4), bool)
    ref[0] = True  # 4 px inside pred
    assert precision(pred, ref) == pytest.approx(0.5)
    assert recall(pred, ref) == pytest.approx(1.0)


def test_empty_conventions() -> None:
    z = np.zeros((5, 5), bool)
    one = z.copy()
    one[2, 2] = True
    assert dice(z, z) == 1.0 and iou(z, z) == 1.0
    assert hd95(z, z) == 0.0 and assd(z, z) == 0.0
    assert dice(one, z) == 0.0
    # a missed or invented structure costs the array's diagonal: 5 x 5 px -> sqrt(50)
    assert hd95(one, z) == pytest.approx(math.sqrt(50.0)) and assd(z, one) == pytest.approx(math.sqrt(50.0))
    # with spacing (2, 1): sqrt(10^2 + 5^2)
    assert hd95(one, z, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(125.0))


def test_a_missed_lung_keeps_its_case_in_the_summary() -> None:
    """Before: HD95 was NaN for a missed lung and summaries silently averaged over fewer cases."""
    from ml.cxr.evaluation import case_metrics

    truth = np.zeros((40, 40), np.uint8)
    truth[5:35, 5:18], truth[5:35, 22:35] = 1, 2
    missed = truth.copy()
    missed[missed == 2] = 0
    row = case_metrics(missed, truth)
    assert row["left_lung_hd95"] == pytest.approx(math.sqrt(2 * 40.0 ** 2))
    assert math.isfinite(row["hd95"]) and row["hd95"] > 20


def test_summaries_are_strict_json(tmp_path) -> None:  # noqa: ANN001
    import json

    from ml.metrics import write_json

    write_json(tmp_path / "s.json", {"a": math.nan, "b": [1.0, math.inf, np.float32(2.5)], "c": np.int64(3)})
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None, 2.5], "c": 3}


def test_surface_distance_shifted_line_with_spacing() -> None:
    # Two single-pixel-wide vertical lines 3 columns apart: every distance is 3 px.
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[1:7, 2] = True
    b[1:7, 5] = True
    assert hd95(a, b) == pytest.approx(3.0)
    assert assd(a, b) == pytest.approx(3.0)
    # Column spacing 0.5 mm → 1.5 mm; row spacing does not matter for a horizontal shift.
    assert hd95(a, b, spacing=(2.0, 0.5)) == pytest.approx(1.5)
    assert assd(a, b, spacing=(2.0, 0.5)) == pytest.approx(1.5)


def test_identical_masks_zero_distance_3d() -> None:
    vol = np.zeros((6, 8, 8), bool)
    vol[1:5, 2:6, 2:6] = True
    assert hd95(vol, vol, spacing=(3.0, 1.0, 1.0)) == 0.0
    assert dice(vol, vol) == 1.0
    shifted = np.roll(vol, 1, axis=0)  # shift one slice (3 mm)
    assert hd95(vol, shifted, spacing=(3.0, 1.0, 1.0)) == pytest.approx(3.0)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ShapeMismatchError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


def test_per_label_metrics_and_swap() -> None:
    ref = np.zeros((10, 10), np.uint8)
    ref[2:8, 1:4] = 1
    ref[2:8, 6:9] = 2
    swapped = ref.copy()
    swapped[ref == 1], swapped[ref == 2] = 2, 1
    good = per_label_metrics(ref, ref, {1: "right_lung", 2: "left_lung"}, spacing=(0.5, 0.5))
    bad = per_label_metrics(swapped, ref, {1: "right_lung", 2: "left_lung"})
    assert good["right_lung_dice"] == 1.0 and good["left_lung_dice"] == 1.0
    assert good["right_lung_area_mm2"] == pytest.approx(18 * 0.25)
    assert bad["right_lung_dice"] == 0.0 and bad["lungs_dice"] == 1.0


def test_summary_statistics() -> None:
    values = [float(v) for v in range(1, 101)]
    s = summarize(values)
    assert s["mean"] == pytest.approx(50.5)
    assert s["median"] == pytest.approx(50.5)
    assert s["p05"] == pytest.approx(np.percentile(values, 5))
    assert s["ci95_low"] < 50.5 < s["ci95_high"]
    table = MetricTable()
    table.add({"case": "a", "dice": 0.9})
    table.add({"case": "b", "dice": 0.7})
    assert table.summary()["dice"]["mean"] == pytest.approx(0.8)
