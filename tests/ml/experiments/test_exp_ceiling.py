"""The input-size ceiling: references through the letterbox and back, as predictions travel."""

from __future__ import annotations

import numpy as np
import pytest

from ml.experiments.ceiling import main, round_trip
from ml.metrics import dice


def _two_lungs(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[((yy - height * 0.5) / (height * 0.3)) ** 2 + ((xx - width * 0.3) / (width * 0.15)) ** 2 <= 1] = 1
    labels[((yy - height * 0.5) / (height * 0.3)) ** 2 + ((xx - width * 0.7) / (width * 0.15)) ** 2 <= 1] = 2
    return labels


def test_native_size_is_lossless() -> None:
    labels = _two_lungs(256, 256)
    np.testing.assert_array_equal(round_trip(labels, 256), labels)


def test_a_large_non_square_image_loses_a_little_at_its_boundaries() -> None:
    labels = _two_lungs(768, 631)
    back = round_trip(labels, 256)
    assert back.shape == labels.shape
    for side in (1, 2):
        assert 0.98 < dice(back == side, labels == side) < 1.0
    # a larger canvas loses less
    finer = round_trip(labels, 512)
    assert (finer != labels).sum() < (back != labels).sum()


def test_thin_structures_vanish_on_a_small_canvas() -> None:
    labels = np.zeros((512, 512), dtype=np.uint8)
    labels[100:400, 250:252] = 1  # 2 px wide: a quarter of a pixel at 64
    assert not (round_trip(labels, 64) == 1).any()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="labels must be 0"):
        round_trip(np.full((8, 8), 3, dtype=np.uint8), 4)
    with pytest.raises(ValueError, match="size must be"):
        round_trip(np.zeros((8, 8), dtype=np.uint8), 0)


def test_cli_needs_a_manifest(capsys) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "--manifest" in capsys.readouterr().err


def test_ceiling_over_a_manifest_split(synthetic_manifest) -> None:
    from ml.experiments.ceiling import resolution_ceiling

    found = resolution_ceiling(synthetic_manifest, "test", [16, 64])
    assert set(found) == {"16", "64"}
    assert found["64"]["n_cases"] == 3
    assert found["64"]["dice_mean"] > found["16"]["dice_mean"]
    assert 0.9 < found["64"]["dice_mean"] <= 1.0
