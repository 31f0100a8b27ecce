"""One 3D U-Net. Variants (test, tiny, medium, large) are named configs of it, registered in `model/registry.py`.

Encoder: per level two 3x3x3 convolutions (norm, LeakyReLU), then a strided 2x2x2 convolution down.
Decoder: a 2x2x2 transposed convolution up, concatenation with the skip, two convolutions. A 1x1x1 head
gives one heatmap channel per class. Input sides must be divisible by 2**(levels-1).

The norm: `instance` (the default, what the recipes pretrain and fine-tune with) takes its statistics over the
window it is given, so a window's shape changes the heatmap everywhere in it; `batch` uses statistics learnt in
training at inference, so a voxel's heatmap depends only on the voxels it sees and any tiling gives the same heatmap
away from window borders; `fixed` (every member of the default soup) is a batch norm whose statistics are set once
and used in training too (never updated): an instance-norm member fine-tuned as `fixed` (the recipes' `fix_norms`
stage; train/fixed.py measures the statistics) becomes window-independent like `batch` without learning
statistics from batches of two patches, which is why `pick --window auto` scores as cubes do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from copick_soup.errors import SoupError


class FixedNorm3d(nn.BatchNorm3d):
    """A batch norm that always normalises with its stored statistics, in training as at inference. Its state
    (weight, bias, running_mean, running_var) is a batch norm's, so checkpoints and runtimes treat it as one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        training=False, eps=self.eps)


NORMS = {"instance": lambda c: nn.InstanceNorm3d(c, affine=True), "batch": nn.BatchNorm3d, "fixed": FixedNorm3d}


@dataclass
class UNetConfig:
    channels: tuple = (16, 32, 64)  # features per level; len(channels) = number of levels
    in_channels: int = 1
    n_classes: int = 6
    norm: str = "instance"  # instance, batch or fixed (see the module's docstring)

    def __post_init__(self):
        if self.norm not in NORMS:
            raise SoupError(f"norm: choose one of {', '.join(NORMS)}, got '{self.norm}'")

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this: each level below the first halves them."""
        return 2 ** (len(self.channels) - 1)

    def sizes_near(self, side: int) -> str:
        """'try A or B': the sides this U-Net can run just below and above `side`, for an error message."""
        lo = max(side // self.divisor * self.divisor, self.divisor)
        return f"try {lo} or {lo + self.divisor}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def conv_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        NORMS[norm](cout),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        NORMS[norm](cout),
        nn.LeakyReLU(0.01, inplace=True),
    )


# What a fine-tune may train (`train_layers`), by the parts it leaves frozen: everything; the decoder and head on
# the pretrained encoder's features; the 1x1x1 head alone.
TRAIN_LAYERS = {"all": (), "decoder": ("encoders", "downs"), "head": ("encoders", "downs", "ups", "decoders")}


class UNet3D(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch = list(config.channels)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = config.in_channels
        for i, c in enumerate(ch):
            self.encoders.append(conv_block(cin, c, config.norm))
            if i < len(ch) - 1:
                self.downs.append(nn.Conv3d(c, c, 2, stride=2))
            cin = c
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for c_deep, c in zip(ch[::-1][:-1], ch[::-1][1:]):
            self.ups.append(nn.ConvTranspose3d(c_deep, c, 2, stride=2))
            self.decoders.append(conv_block(2 * c, c, config.norm))
        self.head = nn.Conv3d(ch[0], config.n_classes, 1)

    @property
    def divisor(self) -> int:
        return self.config.divisor

    def freeze(self, layers: str = "all") -> list[nn.Module]:
        """Leave the parts that `layers` (TRAIN_LAYERS) does not train out of the gradient; returns them, for the
        loop to keep in eval mode (a batch norm among them keeps its statistics). Backward then stops where the
        first trained layer begins: "decoder" spares the encoder's half of every step's backward pass."""
        frozen = [getattr(self, name) for name in TRAIN_LAYERS[layers]]
        for part in frozen:
            part.requires_grad_(False)
        return frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, D, H, W) -> (B, C, D, H, W)
        skips = []
        for i, encode in enumerate(self.encoders):
            x = encode(x)
            if i < len(self.downs):
                skips.append(x)
                x = self.downs[i](x)
        for up, decode in zip(self.ups, self.decoders):
            # pop: each skip is freed once joined, which lowers inference's peak memory by a fifth
            x = decode(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
