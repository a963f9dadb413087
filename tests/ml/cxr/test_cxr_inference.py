"""CXRPredictor on awkward inputs, flip-TTA label handling, and the ONNX path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.cxr.inference import CXRPredictor, OnnxBackend, flip_back
from ml.cxr.preprocessing import ImageFormatError


@pytest.fixture()
def predictor(tiny_model: Path) -> CXRPredictor:
    return CXRPredictor.from_registry(str(tiny_model), device="cpu")


def _check(result, shape: tuple[int, int]) -> None:  # noqa: ANN001
    assert result.labels.shape == shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels).tolist()) <= {0, 1, 2}
    assert 0.0 <= result.confidence <= 1.0


def test_flip_back_swaps_channels() -> None:
    probs = np.zeros((3, 4, 6), np.float32)
    probs[1, :, :2] = 1  # right lung on the image's left
    back = flip_back(probs)
    assert back[2, :, -2:].all() and not back[1].any()


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((100, 80), np.uint8),
        np.full((100, 80), 255, np.uint8),
        (np.random.default_rng(0).random((120, 90)) * 65535).astype(np.uint16),
        np.repeat(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))[..., None], 3, axis=2),
        np.random.default_rng(1).random((50, 300)).astype(np.float32),
        (np.add.outer(np.arange(2500), np.arange(1800)) * 13 % 65536).astype(np.uint16),
    ],
    ids=["black", "white", "16bit", "rgb", "float-wide", "huge"],
)
def test_awkward_inputs_give_a_full_size_mask(predictor: CXRPredictor, image: np.ndarray) -> None:
    _check(predictor.predict(image), image.shape[:2])


@pytest.mark.parametrize(
    "image",
    [np.zeros((64, 64), np.uint8), np.full((100, 80), 255, np.uint8), np.full((2500, 1800), 900, np.uint16),
     np.full((40, 60, 3), 17, np.uint8)],
    ids=["black", "white", "huge-constant", "rgb-constant"],
)
def test_blank_images_get_an_empty_mask(predictor: CXRPredictor, image: np.ndarray) -> None:
    result = predictor.predict(image, spacing=(0.2, 0.2))
    assert result.labels.shape == image.shape[:2] and not result.labels.any()
    assert result.confidence == 0.0 and result.areas_px == {"right_lung": 0, "left_lung": 0}
    assert result.areas_mm2 == {"right_lung": 0.0, "left_lung": 0.0}
    assert set(result.timings_ms) == {"preprocess", "model", "postprocess", "total"}  # as for any image


def test_a_blank_case_in_an_evaluation_scores_as_a_missed_pair_of_lungs(predictor: CXRPredictor, tmp_path: Path) -> None:
    from PIL import Image

    from ml.cxr.data import Case
    from ml.cxr.evaluation import evaluate_predictor

    labels = np.zeros((64, 64), np.uint8)
    labels[10:50, 8:28], labels[10:50, 36:56] = 1, 2
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "blank.png")
    Image.fromarray(labels).save(tmp_path / "labels.png")
    case = Case("synth", "blank", "test", tmp_path / "blank.png", tmp_path / "labels.png")
    summary = evaluate_predictor(predictor, [case])
    assert summary["n_cases"] == 1 and summary["dice_mean"] == 0.0
    assert summary["hd95_mean"] == pytest.approx(np.hypot(64, 64))


def test_shipped_model_draws_no_lungs_on_a_blank_film() -> None:
    """Before the blank check the shipped network drew two lungs (44 % of the image) on black."""
    shipped = CXRPredictor.from_registry("cxr", device="cpu")
    for value in (0, 255):
        assert not shipped.predict(np.full((512, 512), value, np.uint8)).labels.any()


def test_monochrome1_equals_inverted_monochrome2(predictor: CXRPredictor, make_case) -> None:  # noqa: ANN001
    img = make_case(64, seed=3)[0]
    a = predictor.predict(255 - img, photometric="MONOCHROME1").labels
    b = predictor.predict(img, photometric="MONOCHROME2").labels
    assert (a == b).mean() > 0.999


@pytest.mark.parametrize("shape", [(8, 8), (10, 500), (3, 3, 3, 3)])
def test_unusable_inputs_raise_clear_error(predictor: CXRPredictor, shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageFormatError):
        predictor.predict(np.zeros(shape, np.uint8))


def test_onnx_masks_equal_torch(tiny_model: Path, tmp_path: Path, make_case) -> None:  # noqa: ANN001
    from ml.export import export_model

    out = export_model(str(tiny_model), tmp_path / "export")
    assert Path(out["onnx"]).is_file() and Path(out["torchscript"]).is_file()
    torch_pred = CXRPredictor.from_registry(str(tiny_model), device="cpu")
    onnx_pred = CXRPredictor(OnnxBackend(Path(out["onnx"])), torch_pred.card)
    for seed in range(3):
        img = make_case(64, seed=seed)[0]
        a, b = torch_pred.predict(img).labels, onnx_pred.predict(img).labels
        assert (a == b).mean() >= 0.9999


def test_difference_resampling_equals_argmax_of_resampled_probs() -> None:
    import torch
    import torch.nn.functional as F

    from ml.cxr.inference import resample_labels, softmax_np
    from ml.cxr.preprocessing import letterbox_geometry

    rng = np.random.default_rng(0)
    probs = softmax_np(rng.normal(size=(1, 3, 64, 64)).astype(np.float32) * 3)[0]
    geom = letterbox_geometry(150, 120, 64)
    crop = probs[:, geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w]
    ref = F.interpolate(torch.from_numpy(np.ascontiguousarray(crop))[None], size=(150, 120),
                        mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    assert (resample_labels(probs, geom) == ref).mean() > 0.999


def test_windowed_resampling_matches_full_interpolation_on_a_lung_layout() -> None:
    """Only the window around the lungs is interpolated; the result must equal the full resize."""
    import torch
    import torch.nn.functional as F

    from ml.cxr.inference import resample_labels, softmax_np
    from ml.cxr.preprocessing import letterbox_geometry

    logits = np.zeros((1, 3, 64, 64), np.float32)
    logits[0, 0] = 4.0
    yy, xx = np.mgrid[0:64, 0:64]
    for label, cx in ((1, 22), (2, 42)):
        logits[0, label] = 8.0 * (1.0 - ((xx - cx) / 9.0) ** 2 - ((yy - 30) / 16.0) ** 2)
    probs = softmax_np(logits)[0]
    geom = letterbox_geometry(1000, 800, 64)
    crop = probs[:, geom.top : geom.top + geom.new_h, geom.left : geom.left + geom.new_w]
    ref = F.interpolate(torch.from_numpy(np.ascontiguousarray(crop))[None], size=(1000, 800),
                        mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    out = resample_labels(probs, geom)
    assert set(np.unique(ref)) == {0, 1, 2}
    assert (out == ref).mean() > 0.99999
    none = resample_labels(softmax_np(np.stack([np.full((64, 64), 4.0), np.zeros((64, 64)), np.zeros((64, 64))])[None].astype(np.float32))[0], geom)
    assert none.shape == (1000, 800) and not none.any()
