"""Model-card updates shared by the X-ray and CT packaging commands (modality-free).

:func:`update_card` merges evaluation results into a shipped card after checking its weights;
:func:`headline` is the card-sized part of an evaluation summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ml.registry import ModelCard, resolve, verify_weights, write_card

logger = logging.getLogger(__name__)


def update_card(name: str, metrics: dict[str, Any] | None = None, inference: dict[str, Any] | None = None,
                postprocessing: dict[str, Any] | None = None, training: dict[str, Any] | None = None) -> ModelCard:
    """Merge evaluation results / chosen inference settings into an existing card.

    Raises:
        WeightsIntegrityError: the weights no longer match the card's sha256 (the card is not
            rewritten: a new hash would otherwise bless changed weights).
    """
    card = resolve(name)
    verify_weights(card)
    if metrics:
        card.metrics.update(metrics)
    if inference is not None:
        card.inference = inference
    if postprocessing is not None:
        card.postprocessing = postprocessing
    if training:
        card.training.update(training)
    return write_card(card, card.weights_path, Path(card.card_path) if card.card_path else None)


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The card-sized part of an evaluation summary (drops the per-column statistics)."""
    return {k: v for k, v in summary.items() if k not in {"columns"}}
