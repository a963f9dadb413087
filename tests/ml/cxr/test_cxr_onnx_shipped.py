"""The shipped chest X-ray model exported to ONNX gives the same label maps as PyTorch on real
external test images (real data and shipped weights; nothing is written into ml/weights/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ml.registry import ModelNotFoundError, resolve

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped ``cxr`` model exported to ONNX in a temporary folder, with a copy of its
    weights and card beside it.

    ``CXRPredictor.from_registry(..., backend="onnx")`` looks for ``<weights>.onnx`` beside the
    weights it resolves (and a symlinked ``.pt`` resolves to ml/weights/), so the weights and card
    are copied next to the export to exercise that path without writing into ml/weights/.
    Returns the copied ``.pt``.
    """
    from ml.export import export_model

    try:
        card = resolve("cxr")
    except ModelNotFoundError as exc:
        pytest.fail(f"no shipped default chest X-ray model: {exc}")
    folder = tmp_path_factory.mktemp("cxr_onnx")
    weights = folder / card.weights_path.name
    shutil.copyfile(card.weights_path, weights)
    shutil.copyfile(Path(card.card_path), weights.with_suffix(".json"))
    out = export_model("cxr", out_dir=folder, formats=("onnx",))
    onnx_path = Path(out["onnx"])
    assert onnx_path.parent == folder and onnx_path == weights.with_suffix(".onnx")
    assert out["max_abs_diff"]["onnx"] < 1e-3
    assert not card.weights_path.with_suffix(".onnx").exists(), "export leaked into ml/weights/"
    return weights


def test_onnx_and_torch_label_maps_identical_on_external_test_images(onnx_export: Path, shared_data: Path) -> None:
    from ml.cxr.data import load_image, read_manifest
    from ml.cxr.inference import CXRPredictor, OnnxBackend

    torch_pred = CXRPredictor.from_registry("cxr", device="cpu", backend="torch")
    onnx_pred = CXRPredictor.from_registry(str(onnx_export), backend="onnx", num_threads=1)
    assert isinstance(onnx_pred.backend, OnnxBackend)
    assert onnx_pred.card.sha256 == torch_pred.card.sha256
    assert onnx_pred.tta_flip == torch_pred.tta_flip and onnx_pred.post == torch_pred.post

    cases = read_manifest(shared_data / "cxr" / "manifest.csv", ["test"])
    # the first external test image of each dataset (Montgomery is non-square), then the next
    # ones in manifest order up to 3
    firsts = list({c.dataset: c for c in reversed(cases)}.values())
    chosen = (firsts + [c for c in cases if c not in firsts])[:3]
    assert len(chosen) == 3
    for case in chosen:
        image = load_image(case.image_path)
        a = torch_pred.predict(image).labels
        b = onnx_pred.predict(image).labels
        assert a.shape == b.shape == image.shape[:2]
        assert set(np.unique(a)) == {0, 1, 2}, case.case  # both lungs found
        n_diff = int(np.count_nonzero(a != b))
        assert n_diff == 0, f"{case.dataset}/{case.case}: {n_diff} of {a.size} pixels differ"
