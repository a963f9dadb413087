"""Segmentation networks by name: ``build_network("unet" | "resunet" | "attention_unet", ...)``,
and ``"ensemble"`` (probability average of registered networks, for shipped ensembles).

All networks map (B, in_channels, H, W) to logits (B, out_channels, H, W); H and W must be
divisible by 2 ** (number of down-sampling steps), 16 with the defaults.
"""

from ml.networks.registry import (
    NETWORKS,
    UnknownNetworkError,
    build_network,
    count_parameters,
    register_network,
)

__all__ = ["NETWORKS", "UnknownNetworkError", "build_network", "count_parameters", "register_network"]
