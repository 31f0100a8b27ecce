"""Where the U-Nets' instance norms take their statistics, and what that does to each tiling's accuracy.

The crop tiling (`--window auto`) scores below 64³ cubes (`accuracy.md`) because an instance norm takes its
statistics over the window it is given: a voxel's heatmap changes with the window's shape. Three choices, scored
with the default soup on fresh simulated runs under both tilings, at the soup's thresholds (`--norms`):
- `window`: over each window, as trained (the package's behaviour);
- `tomogram`: fixed per tomogram (AdaBN-style): measured on sample 64³ windows of the tomogram (the typical
  window's: mean of the windows' means and of their variances; a second pass measures again with every norm fixed,
  so that each sees the inputs it will get) and folded into the convolution before each norm;
- `local`: over the 64³ neighbourhood each voxel would have had in a cube tiling (benchmarks/local_norm.py): box
  statistics every quarter side, interpolated between box centres; in windows of at most 64³, the instance norm.

    python benchmarks/norms.py [--norms window tomogram local] [--runs 3] [--shape 184,256,256] [--samples 16]

Prints the table and writes benchmarks/results/norms.md (fixed-norms.md: the first run, `window` and `tomogram`
only, with the previous default soup).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from local_norm import localise  # benchmarks/local_norm.py
from table import markdown, publish  # benchmarks/table.py
from torch import nn

from copick_soup.data import open_project
from copick_soup.data.picks import read_picks
from copick_soup.data.tomogram import normalisation_stats
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.ensemble import Member, blend
from copick_soup.ensemble.slabs import normalised
from copick_soup.ensemble.tiling import Tiling
from copick_soup.metric.czii import score_picks
from copick_soup.simulate import simulate_project
from copick_soup.train.fixed import norm_inputs

RESULTS = Path(__file__).parent / "results" / "norms.md"


class FixedNorm(nn.Module):
    """x * scale + shift per channel: an instance norm with its statistics (and affine) fixed in advance."""

    def __init__(self, scale, shift):
        super().__init__()
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1, 1))
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1, 1))

    def forward(self, x):
        return x * self.scale + self.shift


def fix_norms(model, windows, passes: int = 2):
    """A copy of `model` whose instance norms use the statistics measured on `windows`, folded into the
    convolutions before them (convolutions and activations only: no window-dependent step is left)."""
    fixed = copy.deepcopy(model).float().eval()
    for _ in range(passes):
        for name, (mean, var) in measure(fixed, windows).items():
            original = model.get_submodule(name)
            scale = original.weight.detach().float() * torch.rsqrt(var + original.eps)
            parent, _, child = name.rpartition(".")
            setattr(fixed.get_submodule(parent), child, FixedNorm(scale, original.bias.detach().float() - mean * scale))
    return fold(fixed)


def measure(model, windows) -> dict:
    """{norm's name: (mean, variance)} per channel of each norm's input, averaged over the windows."""
    return norm_inputs(model, windows, kinds=(nn.InstanceNorm3d, FixedNorm))


def fold(model):
    """Each FixedNorm that follows a bias-free convolution folded into it (the U-Net's conv blocks)."""
    for block in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(block)):
            conv, norm = block[i - 1], block[i]
            if isinstance(norm, FixedNorm) and isinstance(conv, nn.Conv3d) and conv.bias is None:
                folded = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
                with torch.no_grad():
                    folded.weight.copy_(conv.weight * norm.scale.reshape(-1, 1, 1, 1, 1))
                    folded.bias.copy_(norm.shift.reshape(-1))
                block[i - 1], block[i] = folded, nn.Identity()
    return model


def sample_windows(volume, method: str, count: int, side: int = 64) -> list:
    """`count` normalised side³ windows of the volume, drawn (seeded) from the cube tiling's windows."""
    mean, std = normalisation_stats(volume, method)
    starts = [Tiling.cube(side).starts(n, a) for a, n in enumerate(volume.shape)]
    corners = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    chosen = np.random.default_rng(0).choice(len(corners), min(count, len(corners)), replace=False)
    windows = []
    for i in chosen:
        z, y, x = corners[i]
        windows.append(normalised(volume[z:z + side, y:y + side, x:x + side], mean, std, np.float32)[None, None])
    return windows


NORMS = {"window": "per window", "tomogram": "fixed per tomogram", "local": "local, 64³"}


def with_norms(model, norms: str, volume, manifest, args):
    """The model with its norms' statistics taken as `norms` says (see the module's docstring)."""
    if norms == "tomogram":
        return fix_norms(model, sample_windows(volume, manifest.normalisation_method, args.samples), args.passes)
    return localise(model, 64) if norms == "local" else model


def add_run_arguments(parser) -> None:
    """The options of the runs both this and tiling_diagnosis.py score on."""
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shape", default="184,256,256")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--out", default="/tmp/copick-soup-bench-fixed-norms", help="where the runs are simulated")


def fresh_runs(args) -> tuple[Path, tuple]:
    """(copick config, shape) of `args.runs` experimental-profile runs, simulated when they are not there yet."""
    shape = tuple(int(v) for v in args.shape.split(","))
    config = Path(args.out) / f"{args.seed}-{args.runs}-{'x'.join(map(str, shape))}" / "copick.json"
    if not config.exists():
        simulate_project(config.parent, runs=args.runs, shape=shape, profile="experimental", seed=args.seed)
    return config, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soup", default="default")
    add_run_arguments(parser)
    parser.add_argument("--samples", type=int, default=16, help="64³ windows to measure the norms on, per run")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=list(NORMS))
    args = parser.parse_args()
    config, shape = fresh_runs(args)
    root, soup = open_project(config), Ensemble.load(args.soup)
    variants = [(window, norms) for norms in args.norms for window in (64, None)]
    pairs, seconds = {v: [] for v in variants}, dict.fromkeys(variants, 0.0)
    members = [m for m in soup.members if m.weight > 0]  # a weight-0 member changes no pick
    for run in root.runs:
        truth = read_picks(run, soup.class_names, "curation", "0")
        for window, norms in variants:
            settings, start = InferenceSettings(window=window, runtime="torch"), time.perf_counter()
            heatmaps = []
            for m in members:
                volume = soup.volume(run, m, settings, echo=lambda _: None)
                m = Member(with_norms(m.model, norms, volume, m.manifest, args), m.manifest, m.weight)
                heatmaps.append(soup.heatmap(volume, settings, member=m))
            picks = soup.picks(blend(heatmaps, [m.weight for m in members]))
            seconds[window, norms] += time.perf_counter() - start
            pairs[window, norms].append((truth, {name: p for name, (p, _) in picks.items()}))
    rows = []
    for (window, norms), runs in pairs.items():
        score = score_picks(runs, soup.classes)
        tiling = soup.tiling(shape, InferenceSettings(window=window, runtime="torch")).describe(shape)
        rows.append(f"| {tiling} | {NORMS[norms]} | {score.weighted:.3f} | "
                    + " | ".join(f"{c.fbeta():.3f}" for c in score.classes) + f" | {seconds[window, norms]:.0f} |")
    described = {"window": "per window (as trained)", "local": "local (64³ neighbourhoods)",
                 "tomogram": f"fixed per tomogram ({args.samples} sample 64³ windows, {args.passes} passes)"}
    publish(RESULTS, [
        "Norm statistics " + " or ".join(described[n] for n in args.norms)
        + f", soup '{soup.name}' at its thresholds, torch, TTA 1, "
        f"on {args.runs} fresh experimental-profile runs of {args.shape} (seed {args.seed}); "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["tiling", "norm statistics", "weighted F4", *soup.class_names, "seconds"], rows),
    ])


if __name__ == "__main__":
    main()
