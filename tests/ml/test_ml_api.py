"""The public API in ``ml/__init__.py``: dispatch by modality and the lazily exported names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ml


def test_modality_of_names_and_the_classical_baseline() -> None:
    assert ml.modality_of("cxr") == "cxr"
    assert ml.modality_of("ct") == "ct"
    assert ml.modality_of(ml.CLASSICAL) == "ct"


def test_unknown_model_is_a_registry_error() -> None:
    with pytest.raises(ml.RegistryError):
        ml.modality_of("no_such_model")


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        ml.no_such_name  # noqa: B018


def test_load_predictor_gives_the_xray_predictor_for_cxr(make_case) -> None:  # noqa: ANN001
    """The shipped X-ray model loads by alias and returns a label map of the input's size."""
    from ml.cxr.inference import CXRPredictor

    predictor = ml.load_predictor("cxr")
    assert isinstance(predictor, CXRPredictor)
    image, _ = make_case(size=96)
    labels = predictor.predict(image).labels
    assert labels.shape == (96, 96) and set(np.unique(labels)) <= {0, 1, 2}


def test_load_predictor_gives_the_ct_predictor_for_ct() -> None:
    from ml.ct.inference import CTPredictor

    assert isinstance(ml.load_predictor("ct"), CTPredictor)


def test_predict_writes_an_xray_label_map(make_case, tmp_path: Path) -> None:  # noqa: ANN001
    image, _ = make_case(size=80)
    Image.fromarray(image).save(tmp_path / "in.png")
    summary = ml.predict("cxr", tmp_path / "in.png", tmp_path / "out" / "mask.png")
    written = np.asarray(Image.open(tmp_path / "out" / "mask.png"))
    assert written.shape == (80, 80) and summary["shape"] == [80, 80]
    assert summary["model"] == "cxr_resunet_256"


def test_train_refuses_an_output_dir_for_a_ct_config(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "ml" / "configs" / "ct_default.yaml"
    with pytest.raises(ValueError, match="out_dir"):
        ml.train(config, output_dir=tmp_path)
