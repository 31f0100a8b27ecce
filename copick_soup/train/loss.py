"""The regression loss: mean squared error against the Gaussian heatmaps, weighted towards particles.

Particles fill well under 1% of a tomogram, so a plain MSE is minimised by predicting zero everywhere.
Each voxel's squared error is weighted by 1 + fg_weight * target (the target is 1 at a particle centre and
fades with its Gaussian), so errors at and around particles count up to (1 + fg_weight) times more.

A channel is weighed by its own class's target: a channel firing on another class's particle counts there like
background. Weighing it by any class's target, so that naming a particle wrong costs as much as missing it, made
picks worse (docs/decisions.md) and was removed.
"""

import torch


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, fg_weight: float) -> torch.Tensor:
    """pred, target (B, C, D, H, W) -> scalar."""
    weight = 1.0 + fg_weight * target
    return (weight * (pred.float() - target) ** 2).sum() / weight.sum().clamp_min(1e-6)
