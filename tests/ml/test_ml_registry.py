"""Model registry: cards, aliases, sha256 verification."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
