"""X-ray preprocessing: dtypes, photometric inversion, letterbox and its exact inverse."""

from __future__ import annotations

import numpy as np
import pytest

from ml.cxr.preprocessing import (
    ImageFormatError,
    letterbox,
    letterbox_labels,
    letterbox_geometry,
    normalize_intensity,
    prepare_image,
    to_grayscale,
    unletterbox_labels,
)


def test_bit_depths_and_rgb_agree() -> None:
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257
    rgb = np.repeat(img8[..., None], 3, axis=2)
    a = normalize_intensity(to_grayscale(img8))
    b = normalize_intensity(to_grayscale(img16))
    c = normalize_intensity(to_grayscale(rgb))
    assert np.allclose(a, b, atol=1e-5) and np.allclose(a, c, atol=1e-3)
    assert a.min() == 0.0 and a.max() == 1.0


def test_monochrome1_is_inverted() -> None:
    img = np.tile(np.arange(100, dtype=np.uint16), (20, 1))
    m2 = normalize_intensity(to_grayscale(img), "MONOCHROME2")
    m1 = normalize_intensity(to_grayscale(img), "MONOCHROME1")
    assert np.allclose(m1, 1 - m2)


def test_constant_image_gives_zeros() -> None:
    assert not normalize_intensity(to_grayscale(np.full((30, 30), 7, np.uint8))).any()


def test_prepare_image_refuses_a_blank_image() -> None:
    from ml.cxr.preprocessing import BlankImageError, prepare_image

    with pytest.raises(BlankImageError, match="blank image: every pixel has the value 7"):
        prepare_image(np.full((30, 30), 7, np.uint8), 16)
    image = np.full((30, 30), 7, np.uint8)
    image[3, 4] = 8  # one differing pixel (a burnt-in marker) is not blank
    canvas, _ = prepare_image(image, 16)
    assert canvas.shape == (16, 16)


@pytest.mark.parametrize("shape", [(8, 8), (3, 40, 40, 2), (10,)])
def test_bad_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageFormatError):
        to_grayscale(np.zeros(shape, np.uint8))


def test_unknown_photometric_raises() -> None:
    with pytest.raises(ImageFormatError):
        normalize_intensity(np.ones((20, 20), np.float32), "YUV")


@pytest.mark.parametrize("hw", [(631, 768), (768, 631), (256, 256), (100, 300)])
def test_letterbox_geometry_and_inverse(hw: tuple[int, int]) -> None:
    h, w = hw
    canvas, geom = letterbox(np.ones((h, w), np.float32), 256)
    assert canvas.shape == (256, 256)
    assert max(geom.new_h, geom.new_w) == 256
    assert geom.new_h / geom.new_w == pytest.approx(h / w, rel=0.02)
    # Padding is zero, content is one.
    assert canvas[geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w].min() == pytest.approx(1.0)
    assert canvas.sum() == pytest.approx(geom.new_h * geom.new_w, rel=1e-4)
    labels = np.zeros((h, w), np.uint8)
    labels[h // 4 : h // 2, w // 5 : w // 2] = 1
    labels[h // 4 : 3 * h // 4, 3 * w // 5 : 4 * w // 5] = 2
    back = unletterbox_labels(letterbox_labels(labels, 256), geom)
    assert back.shape == (h, w)
    assert (back == labels).mean() > 0.99


def test_square_letterbox_is_identity_at_model_size() -> None:
    labels = np.random.default_rng(0).integers(0, 3, (256, 256), dtype=np.uint8)
    geom = letterbox_geometry(256, 256, 256)
    assert np.array_equal(unletterbox_labels(letterbox_labels(labels, 256), geom), labels)


def test_prepare_image_16bit_non_square() -> None:
    img = (np.random.default_rng(1).random((300, 200)) * 4095).astype(np.uint16)
    canvas, geom = prepare_image(img, 128)
    assert canvas.shape == (128, 128) and canvas.dtype == np.float32
    assert (geom.new_h, geom.new_w) == (128, 85)
