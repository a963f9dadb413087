"""Model registry: cards, aliases, sha256 verification."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ml.registry import (
    ModelNotFoundError,
    WeightsIntegrityError,
    list_cards,
    load_model,
    resolve,
    sha256_file,
)


def test_registry_module_imports_without_torch() -> None:
    code = "import sys, ml.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_resolve_by_path_and_load(tiny_model: Path) -> None:
    card = resolve(str(tiny_model))
    assert card.name == "tiny_cxr" and card.sha256 == sha256_file(tiny_model)
    assert resolve(str(tiny_model.with_suffix(".json"))).name == "tiny_cxr"
    model, card2 = load_model(str(tiny_model))
    assert card2.num_classes == 3 and not model.training
    assert [c.name for c in list_cards(tiny_model.parent)] == ["tiny_cxr"]


def test_tampered_weights_raise(tiny_model: Path) -> None:
    data = bytearray(tiny_model.read_bytes())
    data[-10] ^= 0xFF
    tiny_model.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        load_model(str(tiny_model))


def test_unknown_model_raises() -> None:
    with pytest.raises(ModelNotFoundError):
        resolve("no-such-model")


def test_shipped_cards_are_complete() -> None:
    cards = list_cards()
    for card in cards:
        assert card.weights_path.is_file(), card.name
        assert sha256_file(card.weights_path) == card.sha256, card.name
        if card.modality == "cxr":
            assert card.labels == {"0": "background", "1": "right_lung", "2": "left_lung"}
            assert card.training.get("licences") and card.training.get("command")
            raw = json.loads(Path(card.card_path).read_text())
            assert "metrics" in raw and "preprocessing" in raw
    cxr = [c for c in cards if "cxr" in c.aliases]
    assert len(cxr) <= 1


def _second_tiny_model(tiny_model: Path, seed: int = 1, channels: tuple[int, ...] = (4, 8, 16)) -> Path:
    from ml import LABELS
    from ml.networks import build_network
    from ml.registry import write_card

    torch.manual_seed(seed)
    kwargs = {"channels": list(channels), "strides": [2] * (len(channels) - 1), "num_res_units": 1}
    weights = tiny_model.parent / f"tiny_res_{seed}.pt"
    torch.save(build_network("resunet", 1, 3, **kwargs).state_dict(), weights)
    write_card({"name": weights.stem, "aliases": [], "modality": "cxr", "architecture": "resunet",
                "network_kwargs": kwargs, "in_channels": 1, "num_classes": 3, "input_size": [64, 64],
                "labels": dict(LABELS), "preprocessing": {"low_pct": 0.5, "high_pct": 99.5},
                "postprocessing": {}, "inference": {"tta_flip": False}, "training": {"command": "test"}}, weights)
    return weights


def test_packaged_ensemble_outputs_the_mean_of_its_members_probabilities(tiny_model: Path, tmp_path: Path) -> None:
    from ml.cxr.packaging import package_ensemble

    from ml.registry import write_card

    other = _second_tiny_model(tiny_model)
    other_card = resolve(str(other)).to_dict()
    other_card["training"]["cases"] = ["case_b", "case_a"]
    write_card(other_card, other)
    card = package_ensemble([str(tiny_model), str(other)], "tiny_ensemble", weights_dir=tmp_path / "ens")
    assert card.architecture == "ensemble" and len(card.network_kwargs["members"]) == 2
    assert "--ensemble" in card.training["command"]
    assert card.training["cases"] == ["case_a", "case_b"]  # what any member was trained on
    ensemble, loaded_card = load_model(str(card.weights_path))
    first, _ = load_model(str(tiny_model))
    second, _ = load_model(str(other))
    assert loaded_card.parameters == sum(p.numel() for m in (first, second) for p in m.parameters())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        mean = 0.5 * (first(x).softmax(1) + second(x).softmax(1))
        got = ensemble(x).softmax(1)
    assert torch.allclose(got, mean, atol=1e-5)
    assert not torch.allclose(first(x).softmax(1), second(x).softmax(1), atol=1e-3), "members must differ"


def test_ensemble_members_must_agree_on_the_input(tiny_model: Path, tmp_path: Path) -> None:
    from ml.cxr.packaging import package_ensemble
    from ml.registry import write_card

    other = _second_tiny_model(tiny_model)
    card = resolve(str(other)).to_dict()
    card["input_size"] = [128, 128]
    write_card(card, other)
    with pytest.raises(ValueError, match="input_size"):
        package_ensemble([str(tiny_model), str(other)], "bad", weights_dir=tmp_path / "ens")
    with pytest.raises(ValueError, match="at least 2"):
        package_ensemble([str(tiny_model)], "bad", weights_dir=tmp_path / "ens")


def test_packaging_cli_refuses_a_bad_ensemble_with_a_message() -> None:
    result = subprocess.run([sys.executable, "-m", "ml.cxr.packaging", "--ensemble", "cxr", "ct", "--name", "mixed"],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 2
    assert "disagree on modality" in result.stderr and "Traceback" not in result.stderr
    assert not (Path(__file__).resolve().parents[2] / "ml" / "weights" / "mixed.pt").exists()


def test_packaging_cli_writes_a_candidate_ensemble_to_a_scratch_folder(tiny_model: Path, tmp_path: Path) -> None:
    other = _second_tiny_model(tiny_model)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "ml.cxr.packaging", "--ensemble", str(tiny_model), str(other),
                             "--name", "scratch_ensemble", "--weights-dir", str(tmp_path / "cand")],
                            capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["weights"] == str(tmp_path / "cand" / "scratch_ensemble.pt")
    assert load_model(str(tmp_path / "cand" / "scratch_ensemble.pt"))[1].architecture == "ensemble"
    assert not (root / "ml" / "weights" / "scratch_ensemble.pt").exists()


def test_packaging_cli_ships_a_training_checkpoint_with_its_card(tmp_path: Path) -> None:
    """A checkpoint in the trainer's format becomes weights + card in --weights-dir, never in ml/weights."""
    from ml.networks import build_network

    torch.manual_seed(0)
    kwargs = {"channels": [4, 8], "strides": [2]}
    net = build_network("unet", 1, 3, **kwargs)
    config = {"modality": "cxr", "model": {"architecture": "unet", "network_kwargs": kwargs},
              "data": {"manifest": "m.csv", "size": 64, "train_split": "train", "val_split": "val"}}
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": net.state_dict(), "epoch": 7, "val_dice": 0.5,
                "extra": {"config": config, "command": "python -m ml train --config c.yaml"}}, checkpoint)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "ml.cxr.packaging", str(checkpoint), "--name", "scratch_unet",
                             "--weights-dir", str(tmp_path / "cand")], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    model, card = load_model(str(tmp_path / "cand" / "scratch_unet.pt"))  # the hash is checked here
    assert (card.architecture, card.input_size, card.training["checkpoint_epoch"]) == ("unet", [64, 64], 7)
    assert card.training["command"] == "python -m ml train --config c.yaml"
    from ml.cxr.postprocess import PostprocessConfig
    assert card.postprocessing == PostprocessConfig().to_dict(), "the card states the steps it runs"
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()(x))
    assert not (root / "ml" / "weights" / "scratch_unet.pt").exists()


def test_update_card_refuses_changed_weights(tiny_model: Path) -> None:
    from ml.packaging import update_card

    card_before = tiny_model.with_suffix(".json").read_text()
    update_card(str(tiny_model), metrics={"val": {"dice_mean": 0.5}})  # unchanged weights: fine
    assert resolve(str(tiny_model)).metrics["val"]["dice_mean"] == 0.5
    with tiny_model.open("ab") as handle:
        handle.write(b"junk")
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        update_card(str(tiny_model), metrics={"val": {"dice_mean": 0.9}})
    assert json.loads(tiny_model.with_suffix(".json").read_text())["sha256"] == json.loads(card_before)["sha256"]


def test_onnx_backend_checks_where_its_export_came_from(tiny_model: Path, make_case) -> None:  # noqa: ANN001
    import shutil

    from ml.export import export_model
    from ml.cxr.inference import CXRPredictor

    export_model(str(tiny_model))  # beside the weights: <name>.onnx, stamped with the .pt's sha256
    image = make_case(64)[0]
    onnx = CXRPredictor.from_registry(str(tiny_model), backend="onnx").predict(image).labels
    assert (onnx == CXRPredictor.from_registry(str(tiny_model)).predict(image).labels).all()
    # an export of other weights put in its place is refused
    other = tiny_model.parent / "other"
    other.mkdir()
    torch.save({k: v + 0.01 for k, v in torch.load(tiny_model).items()}, other / tiny_model.name)
    card = json.loads(tiny_model.with_suffix(".json").read_text())
    from ml.registry import write_card

    write_card(resolve(str(tiny_model)), other / tiny_model.name, other / tiny_model.with_suffix(".json").name)
    export_model(str(other / tiny_model.name))
    shutil.copy(other / "tiny_cxr.onnx", tiny_model.parent / "tiny_cxr.onnx")
    with pytest.raises(WeightsIntegrityError, match="was not exported from"):
        CXRPredictor.from_registry(str(tiny_model), backend="onnx")
    # and so are tampered weights, as with the PyTorch backend
    assert card["sha256"] == sha256_file(tiny_model)
    with tiny_model.open("ab") as handle:
        handle.write(b"junk")
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        CXRPredictor.from_registry(str(tiny_model), backend="onnx")


def test_a_training_checkpoint_gets_a_packaging_hint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": {}}, checkpoint)
    with pytest.raises(ModelNotFoundError, match="python -m ml.cxr.packaging .*best.pt --name NAME"):
        resolve(str(checkpoint))
    with pytest.raises(ModelNotFoundError, match=r"no model card .*missing.json beside .*missing.pt$"):
        resolve(str(tmp_path / "missing.pt"))
