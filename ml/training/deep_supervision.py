"""Deep supervision for MONAI ``UNet`` s: auxiliary heads on the coarser decoder levels.

The heads live beside the network, not in it: forward hooks collect the decoder outputs, each
head maps one of them to class logits, and the loss adds their weighted losses (logits
upsampled to the label size) to the main one. The network's ``state_dict`` is unchanged, so
shipped weights, packaging and inference do not know deep supervision was used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DeepSupervisionError(ValueError):
    """The network has no decoder levels this module can supervise, or the weights are invalid."""


def unet_decoder_levels(model: nn.Module) -> list[nn.Module]:
    """The up-sampling blocks of a MONAI ``UNet`` below the output level, finest first.

    MONAI builds the U-Net as nested ``Sequential(down, SkipConnection(inner), up)``; the top
    ``up`` produces the output logits, each inner one the features of one decoder level.

    Raises:
        DeepSupervisionError: ``model`` is not built that way.
    """
    level = getattr(model, "model", None)
    ups: list[nn.Module] = []
    while isinstance(level, nn.Sequential) and len(level) == 3 and hasattr(level[1], "submodule"):
        ups.append(level[2])
        level = level[1].submodule
    if len(ups) < 2:
        raise DeepSupervisionError(f"{type(model).__name__} is not a MONAI UNet with decoder levels to supervise")
    return ups[1:]


class DeepSupervision(nn.Module):
    """Auxiliary 1×1 heads on a U-Net's decoder levels and the combined loss.

    Args:
        model: a MONAI ``UNet`` (``unet`` or ``resunet`` from :mod:`ml.networks`).
        num_classes: output classes of the heads.
        weights: loss weight of each auxiliary level, finest first (e.g. ``[0.5, 0.25]``); the
            main output has weight 1 and the sum is normalised to 1.
    """

    def __init__(self, model: nn.Module, num_classes: int, weights: Sequence[float]) -> None:
        super().__init__()
        levels = unet_decoder_levels(model)
        if not weights or len(weights) > len(levels):
            raise DeepSupervisionError(
                f"deep_supervision needs 1 to {len(levels)} weights for this network, got {list(weights)}")
        if any(not (w > 0) for w in weights):
            raise DeepSupervisionError(f"deep_supervision weights must be > 0, got {list(weights)}")
        self.weights = [float(w) for w in weights]
        self._features: dict[int, torch.Tensor] = {}
        self._hooks = [level.register_forward_hook(self._keeper(i)) for i, level in enumerate(levels[: len(weights)])]
        widths = self._level_widths(model)
        conv = nn.Conv3d if self._spatial_dims == 3 else nn.Conv2d
        self.heads = nn.ModuleList(conv(widths[i], num_classes, kernel_size=1) for i in range(len(weights)))

    def _keeper(self, index: int) -> Callable[..., None]:
        def keep(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._features[index] = output
        return keep

    def _level_widths(self, model: nn.Module) -> list[int]:
        """Channels of each hooked level, from one forward pass on a small zero input."""
        first = next(p for p in model.parameters() if p.dim() > 2)  # the first convolution's kernel
        self._spatial_dims, in_channels = first.dim() - 2, first.shape[1]
        side = 2 ** (len(unet_decoder_levels(model)) + 2)  # a 2x2 bottleneck: instance norm refuses 1x1
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, in_channels) + (side,) * self._spatial_dims, device=first.device))
        model.train(was_training)
        widths = [self._features[i].shape[1] for i in sorted(self._features)]
        self._features.clear()
        return widths

    def loss(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
        """``(loss(main) + Σ wᵢ·loss(headᵢ)) / (1 + Σ wᵢ)`` for the forward pass just made.

        Raises:
            DeepSupervisionError: no decoder features were recorded (forward not run through
                the hooked network).
        """
        if len(self._features) != len(self.heads):
            raise DeepSupervisionError("no decoder features recorded: run the network's forward first")
        total = loss_fn(logits, labels)
        size = logits.shape[2:]
        mode = "trilinear" if self._spatial_dims == 3 else "bilinear"
        for index, (weight, head) in enumerate(zip(self.weights, self.heads)):
            aux = F.interpolate(head(self._features[index]), size=size, mode=mode, align_corners=False)
            total = total + weight * loss_fn(aux, labels)
        self._features.clear()
        return total / (1.0 + sum(self.weights))

    def forget(self) -> None:
        """Drop the recorded features (after a forward pass whose loss is not needed)."""
        self._features.clear()

    def remove(self) -> None:
        """Detach the hooks from the network."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
