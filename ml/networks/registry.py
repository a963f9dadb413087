"""Name → constructor registry for segmentation networks (timm-style ``@register_network``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.nets import AttentionUnet, UNet
from torch import nn

logger = logging.getLogger(__name__)

NetworkFactory = Callable[..., nn.Module]
NETWORKS: dict[str, NetworkFactory] = {}

DEFAULT_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256)


class UnknownNetworkError(KeyError):
    """No network is registered under the requested name."""


def register_network(name: str) -> Callable[[NetworkFactory], NetworkFactory]:
    """Decorator registering ``factory(in_channels, out_channels, **kwargs)`` under ``name``."""

    def wrap(factory: NetworkFactory) -> NetworkFactory:
        if name in NETWORKS:
            raise ValueError(f"network {name!r} is already registered")
        NETWORKS[name] = factory
        return factory

    return wrap


def build_network(name: str, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    """Build a registered network.

    Args:
        name: ``unet``, ``resunet``, ``attention_unet`` or ``ensemble`` (``members=[...]``).
        in_channels: image channels (1 for X-ray).
        out_channels: classes including background (3: background, right lung, left lung).
        **kwargs: network options (``channels``, ``strides``, ``num_res_units``, ``dropout``,
            ``norm``, ``spatial_dims``).

    Returns:
        Module mapping (B, in_channels, H, W) → logits (B, out_channels, H, W).

    Raises:
        UnknownNetworkError: ``name`` is not registered.
    """
    if name not in NETWORKS:
        raise UnknownNetworkError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](in_channels, out_channels, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _strides(channels: Sequence[int], strides: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(strides) if strides is not None else (2,) * (len(channels) - 1)


def _monai_unet(in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int] | None,
                num_res_units: int, norm: str, dropout: float, spatial_dims: int) -> nn.Module:
    """MONAI ``UNet``: plain blocks when ``num_res_units`` is 0, residual units otherwise."""
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=_strides(channels, strides),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )


@register_network("unet")
def unet(
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    strides: Sequence[int] | None = None,
    norm: str = "batch",
    dropout: float = 0.0,
    spatial_dims: int = 2,
) -> nn.Module:
    """Plain U-Net (MONAI ``UNet`` with ``num_res_units=0``: conv-norm-act blocks, strided down)."""
    return _monai_unet(in_channels, out_channels, channels, strides, 0, norm, dropout, spatial_dims)


@register_network("resunet")
def resunet(
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    strides: Sequence[int] | None = None,
    num_res_units: int = 2,
    norm: str = "batch",
    dropout: float = 0.0,
    spatial_dims: int = 2,
) -> nn.Module:
    """Residual U-Net (MONAI ``UNet`` whose blocks are ``ResidualUnit`` s)."""
    if num_res_units < 1:
        raise ValueError(f"resunet needs num_res_units >= 1, got {num_res_units}")
    return _monai_unet(in_channels, out_channels, channels, strides, num_res_units, norm, dropout, spatial_dims)


@register_network("attention_unet")
def attention_unet(
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    strides: Sequence[int] | None = None,
    dropout: float = 0.0,
    spatial_dims: int = 2,
) -> nn.Module:
    """Attention U-Net (MONAI ``AttentionUnet``: attention gates on the skip connections)."""
    return AttentionUnet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=_strides(channels, strides),
        dropout=dropout,
    )


class ProbabilityEnsemble(nn.Module):
    """Average of several networks' class probabilities.

    The output is the log of the mean softmax, so a softmax of it gives back the mean
    probability: callers that apply a softmax to "logits" (inference, evaluation, ONNX) need
    no change.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([member(x).float().softmax(1) for member in self.members]).mean(0)
        return probs.clamp_min(1e-7).log()


@register_network("ensemble")
def ensemble(
    in_channels: int,
    out_channels: int,
    members: Sequence[dict[str, Any]] = (),
) -> nn.Module:
    """Probability-averaging ensemble of registered networks.

    Args:
        members: one ``{"architecture": name, "network_kwargs": {...}}`` per member.
    """
    return ProbabilityEnsemble([
        build_network(str(m["architecture"]), in_channels, out_channels, **m.get("network_kwargs", {}))
        for m in members
    ])
