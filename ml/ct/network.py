"""The CT lung network (2D, axial slices) and sliding it over a volume's slices.

The network is the shared ``resunet`` of :mod:`ml.networks` (MONAI ``UNet`` with residual
units), with instance normalisation, predicting background vs lung; the sides come from 3D
post-processing (:mod:`ml.ct.postprocess`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ml.ct.preprocessing import stack_neighbours
from ml.networks import build_network

logger = logging.getLogger(__name__)

ARCHITECTURE = "resunet"
DEFAULT_NETWORK: dict[str, Any] = {
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 1,
    "norm": "INSTANCE",
}


def network_kwargs(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CT network options: :data:`DEFAULT_NETWORK` updated with ``overrides``."""
    return {**DEFAULT_NETWORK, **(overrides or {})}


def build_ct_network(in_channels: int, out_channels: int, **overrides: Any) -> torch.nn.Module:
    """Build the CT network.

    Args:
        in_channels: slices per input (2·context + 1).
        out_channels: classes (2: background, lung).
        **overrides: ``resunet`` options replacing :data:`DEFAULT_NETWORK`.
    """
    return build_network(ARCHITECTURE, in_channels, out_channels, **network_kwargs(overrides))


@torch.inference_mode()
def predict_lung_probability(
    model: torch.nn.Module, image: np.ndarray, context: int, batch_size: int = 16
) -> np.ndarray:
    """Lung probability of every slice.

    Args:
        model: network with 2 output classes, in eval mode.
        image: ``(D, S, S)`` float32 windowed slices.
        context: neighbouring slices on each side used as channels.
        batch_size: slices per forward pass.

    Returns:
        ``(D, S, S)`` float32 lung probability in [0, 1].
    """
    depth = image.shape[0]
    out = np.empty(image.shape, dtype=np.float32)
    for start in range(0, depth, batch_size):
        batch = np.stack([stack_neighbours(image, z, context) for z in range(start, min(depth, start + batch_size))])
        logits = model(torch.from_numpy(batch))
        out[start : start + len(batch)] = torch.softmax(logits, dim=1)[:, 1].numpy()
    return out
