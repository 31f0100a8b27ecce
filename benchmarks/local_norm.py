"""Instance norms with local statistics: a member's heatmap in a large window as in the windows it was tuned on.

Measured by benchmarks/norms.py (`--norms local`) and not adopted: it does not close the crop tiling's gap
(benchmarks/results/norms.md) and it more than doubles the networks' time. Kept so the measurement can be repeated.

An instance norm takes its statistics over the whole window it is given, so a U-Net's heatmap depends on the
window's size: the default soup, searched with 64³ cubes, loses F4 in larger windows (benchmarks/results/
accuracy.md). `LocalInstanceNorm3d` takes each voxel's statistics over the `side`³ neighbourhood that a cube
tiling of `side` would have given it: box means over `side`-wide boxes (at the norm's resolution) every quarter
side, interpolated linearly between box centres. In a window no larger than `side` it is the instance norm itself.
`localise(model, side)` swaps them into a copy of a U-Net, the side halving with each level down.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from copick_soup.ensemble.tiling import window_starts

PLANES = 8


class LocalInstanceNorm3d(nn.Module):
    def __init__(self, norm: nn.InstanceNorm3d, side: int):
        super().__init__()
        self.weight, self.bias, self.eps, self.side = norm.weight, norm.bias, norm.eps, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if all(n <= self.side for n in x.shape[2:]):
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        mean, square = box_moments(x.float(), self.side)
        scale = torch.rsqrt((square - mean * mean).clamp_min(0) + self.eps) * self.weight.view(1, -1, 1, 1, 1)
        shift = self.bias.view(1, -1, 1, 1, 1) - mean * scale  # the norm is x * scale + shift
        for axis in (2, 3):  # from box centres back to every voxel, one axis at a time
            scale, shift = (interpolate(t, axis, x.shape[axis], self.side) for t in (scale, shift))
        out = torch.empty_like(x)
        for z in range(0, x.shape[2], PLANES):  # the last axis a few planes at a time: never a full-size copy
            planes = slice(z, z + PLANES)
            s, b = (interpolate(t[:, :, planes], 4, x.shape[4], self.side) for t in (scale, shift))
            out[:, :, planes] = torch.addcmul(b, x[:, :, planes].float(), s)
        return out


def box_starts(length: int, side: int) -> list[int]:
    """Starts of `side`-wide boxes every quarter side, the last one ending at `length`."""
    return window_starts(length, side, step=max(side // 4, 1))


def box_moments(x: torch.Tensor, side: int):
    """Mean of x and of x² over boxes of `side` (B, C, nz, ny, nx); the first axis read slice by slice, so that
    no full-size x² is ever held."""
    side0 = min(side, x.shape[2])
    first = [(s.mean(2), (s * s).mean(2)) for s in (x.narrow(2, s0, side0) for s0 in box_starts(x.shape[2], side))]
    mean, square = (torch.stack(t, 2) for t in zip(*first))
    for axis in (3, 4):
        mean, square = (box_mean(t, axis, side) for t in (mean, square))
    return mean, square


def box_mean(t: torch.Tensor, axis: int, side: int) -> torch.Tensor:
    width = min(side, t.shape[axis])
    return torch.stack([t.narrow(axis, s, width).mean(axis) for s in box_starts(t.shape[axis], side)], axis)


def interpolate(t: torch.Tensor, axis: int, length: int, side: int) -> torch.Tensor:
    """Values at box centres along `axis` to every one of `length` voxels: linear between centres, constant
    beyond the first and last."""
    starts = box_starts(length, side)
    centres = np.array(starts) + (min(side, length) - 1) / 2
    where = np.interp(np.arange(length), centres, np.arange(len(starts)))
    lo = np.floor(where).astype(np.int64)
    hi = np.minimum(lo + 1, len(starts) - 1)
    shape = [1] * t.dim()
    shape[axis] = length
    frac = torch.as_tensor(where - lo, dtype=t.dtype).view(shape)
    lo, hi = torch.as_tensor(lo), torch.as_tensor(hi)
    return t.index_select(axis, lo) * (1 - frac) + t.index_select(axis, hi) * frac


def localise(model: nn.Module, side: int) -> nn.Module:
    """A copy of a U-Net (model/unet.py) whose instance norms take their statistics over `side`³ neighbourhoods
    (in input voxels: side / 2**level at each level)."""
    model = copy.deepcopy(model)
    levels = len(model.encoders)
    blocks = [(block, i) for i, block in enumerate(model.encoders)]
    blocks += [(block, levels - 2 - j) for j, block in enumerate(model.decoders)]
    for block, level in blocks:
        for i, layer in enumerate(block):
            if isinstance(layer, nn.InstanceNorm3d):
                block[i] = LocalInstanceNorm3d(layer, max(side >> level, 1))
    return model
