"""From instance norms to fixed statistics: how an instance-norm member becomes window-independent.

An instance norm takes its statistics over the window it is given, so its member's heatmap depends on the tiling
(benchmarks/results/archive/tiling-diagnosis.md). `fix_statistics` gives a `fixed`-norm U-Net (model/unet.py) loaded
with an instance-norm member's weights the statistics its norms would have taken on typical windows: per channel, the
mean over sample windows of each window's mean and variance, measured norm by norm (a second pass measures again with
every norm fixed, so that each sees the inputs it will get). Fixing alone costs accuracy, since the members use their
per-window statistics (benchmarks/results/archive/fixed-norms.md); fine-tuning with the statistics fixed
(`--set norm=fixed` with `--init` an instance-norm member) recovers it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from copick_soup.model.unet import FixedNorm3d


def norm_inputs(model: nn.Module, windows, kinds=(nn.InstanceNorm3d, FixedNorm3d)) -> dict:
    """{norm's name: (mean, variance)}: per channel of the input of each norm of `kinds`, averaged over windows."""
    stats, handles = {}, []

    def record(name):
        def hook(module, args):
            x = args[0].float()
            m, v, n = stats.get(name, (0, 0, 0))
            stats[name] = (m + x.mean(dim=(2, 3, 4)).sum(0), v + x.var(dim=(2, 3, 4), unbiased=False).sum(0),
                           n + x.shape[0])
        return hook

    for name, module in model.named_modules():
        if isinstance(module, kinds):
            handles.append(module.register_forward_pre_hook(record(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for window in windows:
                model(window)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: (m / n, v / n) for name, (m, v, n) in stats.items()}


def fix_statistics(fixed: nn.Module, instance: nn.Module, windows, passes: int = 2) -> None:
    """Set the statistics of `fixed`'s norms (a `fixed`-norm U-Net holding `instance`'s weights) to those
    `instance`'s norms take on `windows`; later passes re-measure in `fixed` itself."""
    source = instance
    for _ in range(passes):
        measured = norm_inputs(source, windows)
        with torch.no_grad():
            for name, (mean, var) in measured.items():
                norm = fixed.get_submodule(name)
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
        source = fixed


def random_windows(volumes, count: int, side: int, rng: np.random.Generator, device="cpu") -> list[torch.Tensor]:
    """`count` side³ crops (1, 1, side, side, side) at random places of random volumes (`TrainVolume`s): the
    windows of a tomogram `pick` sees, not training's particle-centred patches. `side` must fit every volume."""
    windows = []
    for _ in range(count):
        image = volumes[int(rng.integers(len(volumes)))].image
        z, y, x = (int(rng.integers(0, n - side + 1)) for n in image.shape)
        crop = np.ascontiguousarray(image[z:z + side, y:y + side, x:x + side], dtype=np.float32)
        windows.append(torch.from_numpy(crop)[None, None].to(device))
    return windows
