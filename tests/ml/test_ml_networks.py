"""Network registry: every registered network maps (B, 1, H, W) to (B, 3, H, W) logits."""

from __future__ import annotations

import pytest
import torch

from ml.networks import NETWORKS, UnknownNetworkError, build_network, count_parameters


@pytest.mark.parametrize("name", ["unet", "resunet", "attention_unet"])
def test_output_shape(name: str) -> None:
    net = build_network(name, 1, 3, channels=[4, 8, 16, 32], strides=[2, 2, 2]).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 64, 48))
    assert out.shape == (2, 3, 64, 48)
    assert count_parameters(net) > 0


def test_registry_names_and_unknown() -> None:
    assert {"unet", "resunet", "attention_unet"} <= set(NETWORKS)
    with pytest.raises(UnknownNetworkError):
        build_network("nope", 1, 3)


def test_resunet_has_more_parameters_than_unet() -> None:
    kw = {"channels": [4, 8, 16], "strides": [2, 2]}
    assert count_parameters(build_network("resunet", 1, 3, **kw)) > count_parameters(build_network("unet", 1, 3, **kw))
