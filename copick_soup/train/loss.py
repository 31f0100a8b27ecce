"""The regression loss: mean squared error against the Gaussian heatmaps, weighted towards particles.

Particles fill well under 1% of a tomogram, so a plain MSE is minimised by predicting zero everywhere.
Each voxel's squared error is weighted by 1 + fg_weight * target (the target is 1 at a particle centre and
fades with its Gaussian), so errors at and around particles count up to (1 + fg_weight) times more.

Which target weighs a channel is `fg_scope`: `own`, the channel's own class's, makes missing a particle cost up to
11x more than a channel firing on another class's particle, which there counts like background; `any`, the
largest target of any class, makes naming a particle wrong cost as much as missing it.
"""

import torch

FG_SCOPES = ("own", "any")


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, fg_weight: float, fg_scope: str = "own") -> torch.Tensor:
    """pred, target (B, C, D, H, W) -> scalar."""
    foreground = target if fg_scope == "own" else target.amax(dim=1, keepdim=True)
    weight = (1.0 + fg_weight * foreground).expand_as(target)
    return (weight * (pred.float() - target) ** 2).sum() / weight.sum().clamp_min(1e-6)
