"""Model registry: shipped weights and their model cards (torch-free at import time).

Each shipped model is a pair ``ml/weights/<name>.pt`` (a ``state_dict``) and
``ml/weights/<name>.json`` (its model card). A card names the network (a key of
``ml.networks.NETWORKS``), its options, input size, preprocessing, labels, training data and
licences, the exact training command and config, metrics, and the sha256 of the weights.
Aliases (``"cxr"``, ``"ct"``) name the default model of a modality.

Only :func:`load_model` imports torch, so the Django side can list cards cheaply.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

REQUIRED_KEYS = (
    "name",
    "modality",
    "architecture",
    "network_kwargs",
    "in_channels",
    "num_classes",
    "input_size",
    "labels",
    "weights_file",
    "sha256",
)


class RegistryError(LookupError):
    """Base class of registry errors."""


class ModelNotFoundError(RegistryError):
    """No card matches the requested name, alias or path."""


class ModelCardError(RegistryError):
    """A model card is unreadable or lacks required keys."""


class WeightsIntegrityError(RegistryError):
    """The weights file is missing or its sha256 differs from the card."""


@dataclass
class ModelCard:
    """Metadata of one shipped model (the JSON card)."""

    name: str
    modality: str
    architecture: str
    network_kwargs: dict[str, Any]
    in_channels: int
    num_classes: int
    input_size: list[int]
    labels: dict[str, str]
    weights_file: str
    sha256: str
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    postprocessing: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parameters: int | None = None
    card_path: str | None = None

    @property
    def weights_path(self) -> Path:
        """Absolute path of the weights file (relative names resolve beside the card)."""
        path = Path(self.weights_file)
        if path.is_absolute():
            return path
        base = Path(self.card_path).parent if self.card_path else WEIGHTS_DIR
        return base / path

    def to_dict(self) -> dict[str, Any]:
        """JSON-able card without the runtime-only ``card_path``."""
        data = asdict(self)
        data.pop("card_path", None)
        return data

    @classmethod
    def from_file(cls, path: Path) -> ModelCard:
        """Read a card JSON.

        Raises:
            ModelCardError: unreadable JSON or missing required keys.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelCardError(f"cannot read model card {path}: {exc}") from exc
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ModelCardError(f"model card {path} lacks key(s) {missing}")
        known = set(cls.__dataclass_fields__)
        extra = {k: v for k, v in data.items() if k not in known}
        card = cls(**{k: v for k, v in data.items() if k in known})
        if extra:
            card.training.setdefault("extra_card_keys", extra)
        card.card_path = str(path)
        return card


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def list_cards(weights_dir: Path | None = None) -> list[ModelCard]:
    """All model cards in ``weights_dir`` (default ``ml/weights``), sorted by name."""
    folder = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    if not folder.is_dir():
        return []
    return sorted((ModelCard.from_file(p) for p in folder.glob("*.json")), key=lambda c: c.name)


def resolve(name_or_path: str, weights_dir: Path | None = None) -> ModelCard:
    """Find the card for a model name, an alias (``"cxr"``, ``"ct"``), or a ``.pt``/``.json`` path.

    Raises:
        ModelNotFoundError: nothing matches.
    """
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in {".json", ".pt", ".pth"}:
        card_path = path.with_suffix(".json")
        if card_path.is_file():
            card = ModelCard.from_file(card_path)
            if path.suffix != ".json":
                card.weights_file = str(path.resolve())
            return card
        hint = ""
        if path.suffix != ".json" and path.is_file():
            hint = ("; a training checkpoint must be packaged first (weights + card in ml/weights/): "
                    f"python -m ml.cxr.packaging {path} --name NAME (CT: python -m ml.ct.packaging --checkpoint {path} "
                    "--name NAME), then pass --model NAME")
        raise ModelNotFoundError(f"no model card {card_path} beside {path}{hint}")
    cards = list_cards(weights_dir)
    for card in cards:
        if card.name == text:
            return card
    for card in cards:
        if text in card.aliases:
            return card
    known = sorted({c.name for c in cards} | {a for c in cards for a in c.aliases})
    raise ModelNotFoundError(f"unknown model {text!r}; known names and aliases: {known}")


SOURCE_SHA256_KEY = "source_sha256"
"""Metadata key, in an exported ONNX file and TorchScript archive, holding the sha256 of the
PyTorch weights they were exported from (checked when a registered model runs on onnxruntime)."""


def verify_weights(card: ModelCard) -> Path:
    """Check the weights file exists and matches the card's sha256.

    Raises:
        WeightsIntegrityError: missing file or hash mismatch.
    """
    path = card.weights_path
    if not path.is_file():
        raise WeightsIntegrityError(f"weights file for {card.name!r} not found: {path}")
    actual = sha256_file(path)
    if actual != card.sha256:
        raise WeightsIntegrityError(
            f"sha256 mismatch for {path}: card says {card.sha256}, file is {actual}"
        )
    return path


def build_from_card(card: ModelCard) -> nn.Module:
    """Instantiate the card's network with random weights."""
    from ml.networks import build_network

    return build_network(card.architecture, card.in_channels, card.num_classes, **card.network_kwargs)


def load_model(name_or_path: str, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """Load a shipped model in eval mode after verifying its sha256.

    Args:
        name_or_path: model name, alias, or path to a ``.pt`` / ``.json`` with a card beside it.
        device: torch device string.

    Returns:
        (model in eval mode on ``device``, its card).

    Raises:
        ModelNotFoundError: unknown model.
        WeightsIntegrityError: missing weights or sha256 mismatch.
    """
    import torch

    card = resolve(name_or_path)
    path = verify_weights(card)
    model = build_from_card(card)
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict(state)
    model.to(device).eval()
    logger.info("loaded model %s (%s) from %s", card.name, card.architecture, path)
    return model, card


def write_card(card: ModelCard | dict[str, Any], weights_path: Path, card_path: Path | None = None) -> ModelCard:
    """Write a card JSON beside ``weights_path`` with its sha256 filled in.

    Args:
        card: a :class:`ModelCard` or a dict with the card keys (``sha256`` and
            ``weights_file`` are filled in).
        weights_path: the ``.pt`` file the card describes.
        card_path: where to write (default: ``weights_path`` with ``.json``).

    Returns:
        The written card.
    """
    weights_path = Path(weights_path)
    data = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    data["weights_file"] = weights_path.name
    data["sha256"] = sha256_file(weights_path)
    out = Path(card_path) if card_path else weights_path.with_suffix(".json")
    out.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return ModelCard.from_file(out)
