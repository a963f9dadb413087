"""Segmentation losses: weighted Dice + cross-entropy on multi-class logits."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn


class DiceCE(nn.Module):
    """``lambda_dice * soft Dice + lambda_ce * cross-entropy`` for (B, C, ...) logits.

    Labels are integer maps (B, ...) or (B, 1, ...). Dice is computed on softmax
    probabilities against one-hot targets; the background channel is excluded by default
    so that the lungs (small structures on a large canvas) drive the Dice term. With
    ``num_classes == 1`` the same applies with a sigmoid and binary cross-entropy.

    Args:
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the (binary) cross-entropy term.
        include_background: include channel 0 in the Dice term.
        class_weights: optional per-class CE weights (C,).
    """

    def __init__(
        self,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        include_background: bool = False,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.multi = DiceCELoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
            weight=weight,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        self.binary = DiceCELoss(
            include_background=True,
            sigmoid=True,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss for logits (B, C, ...) and integer labels (B, ...) or (B, 1, ...)."""
        if labels.dim() == logits.dim() - 1:
            labels = labels.unsqueeze(1)
        if logits.shape[1] == 1:
            return self.binary(logits, (labels > 0).to(logits.dtype))
        return self.multi(logits, labels.long())
