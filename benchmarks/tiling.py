"""How wide a margin the crop tiling needs, and what a window's activations cost: the two numbers `choose_tiling`
rests on (ensemble/tiling.py: MARGIN and forward_memory).

1. Margin. The default soup's trained members each pick one simulated tomogram with crop tilings of several margins
   and with the classic tiling (64³ windows, overlap 0.25, Gaussian). Each heatmap is compared with a reference
   that has no inner borders at all: one window over the whole tomogram. Columns: the largest and the 99.9th
   percentile absolute difference in heat, and the share of the reference's picks (at the soup's thresholds)
   that a tiling misses or moves by more than a voxel. Every tiling differs from the reference, the classic one
   most: the U-Nets' instance norms take their statistics over the window, so a window's size and content change
   its heatmap everywhere, not only at its borders. Wider margins bring the crop tiling closer to the reference;
   whether any of it costs accuracy is `accuracy.py`'s question (held-out F4, crop against classic).
2. Memory. Peak resident memory of one forward pass for each U-Net variant, at two window sizes, against
   `forward_memory` (what the chooser budgets); the estimate must not be below the measurement.

    python benchmarks/tiling.py [--shape 184,256,256] [--margins 0 4 8 12 16 24]

Prints the tables and writes benchmarks/results/tiling.md.
"""

from __future__ import annotations

import copick_soup  # noqa: F401  (first, as in `copick-soup pick`: its huge-page setting must precede torch)

# isort: split
import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from memory import PeakRSS  # benchmarks/memory.py
from table import markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project, open_tomogram
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.runtimes import TorchPredictor
from copick_soup.ensemble.tiling import Tiling, forward_memory
from copick_soup.ensemble.windows import predict_volume
from copick_soup.model import create_model
from copick_soup.simulate import simulate_project

RESULTS = Path(__file__).parent / "results" / "tiling.md"


def heatmaps(soup: Ensemble, member, volume, tiling: Tiling) -> np.ndarray:
    settings = InferenceSettings(window=tiling.window[0] if tiling.blend == "gaussian" else None)
    source = soup.source(member, volume, settings)
    return predict_volume(source.predict_batch, volume, len(soup.classes), tiling, stats=source.stats)


def picks_changed(soup: Ensemble, reference: np.ndarray, heat: np.ndarray) -> float:
    """The share of the reference's picks that `heat` misses or moves by more than a voxel."""
    ref, got = soup.picks(reference), soup.picks(heat)
    total = changed = 0
    for name, (positions, _) in ref.items():
        total += len(positions)
        others = got[name][0]
        for p in positions:
            near = np.linalg.norm(others - p, axis=1).min() if len(others) else np.inf
            changed += near > soup.voxel_size
    return changed / max(total, 1)


def margin_rows(soup: Ensemble, volume, margins) -> list[str]:
    shape = volume.shape
    rows = []
    for member in soup.members:
        if member.manifest.tomo_type != "denoised":
            continue
        unet = member.model.config
        divisor = unet.divisor
        whole = tuple(-(-n // divisor) * divisor for n in shape)
        reference = heatmaps(soup, member, volume, Tiling(whole, "crop", margin=0))
        tilings = [("classic", Tiling.cube(64, 0.25))]
        for m in margins:  # a third of the tomogram's width per window: inner borders on every axis but z
            window = (whole[0], *(-(-(n // 3 + 2 * m) // divisor) * divisor for n in shape[1:]))
            tilings.append((f"margin {m}", Tiling(window, "crop", margin=m, axis=1)))
        for label, tiling in tilings:
            heat = heatmaps(soup, member, volume, tiling)
            diff = np.abs(heat - reference)
            rows.append(f"| {member.manifest.name} | {label} | {tiling.describe(shape)} | {diff.max():.4f} | "
                        f"{np.percentile(diff, 99.9):.4f} | {picks_changed(soup, reference, heat):.3f} |")
            print(rows[-1], flush=True)
    return rows


def forward_bytes(variant: str, amp: bool, shape) -> float:
    """Peak RSS of one forward pass per window voxel, in a fresh process (so that no allocator cache hides it):
    this script again, with --forward."""
    cmd = [sys.executable, __file__, "--forward", variant, "x".join(map(str, shape))] + (["--bf16"] if amp else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def forward_child(variant: str, shape: str, amp: bool) -> None:
    """In the fresh process: print the peak RSS of one forward pass per window voxel."""
    torch.manual_seed(0)
    predictor = TorchPredictor(create_model(variant, n_classes=6).eval(), "cpu", torch.bfloat16 if amp else None)
    predictor(torch.zeros(1, 1, 32, 32, 32))  # kernel set-up, small
    x = torch.randn(1, 1, *(int(n) for n in shape.split("x")))
    with PeakRSS() as rss:
        predictor(x)
    print(rss.gb * 1e9 / x.numel())


def memory_rows(sides) -> list[str]:
    rows = []
    for variant in ("unet3d_tiny", "unet3d_medium", "unet3d_large"):
        config = create_model(variant, n_classes=6).config
        for amp in (False, True):
            for shape in sides:
                voxels = math.prod(shape)
                peak = forward_bytes(variant, amp, shape) * voxels / 1e6
                estimate = forward_memory(config, amp, voxels) / 1e6
                rows.append(f"| {variant} | {'bfloat16' if amp else 'float32'} | {'x'.join(map(str, shape))} | "
                            f"{peak:.0f} | {estimate:.0f} | {'yes' if estimate >= peak else 'NO'} |")
                print(rows[-1], flush=True)
    return rows


def kept_rows() -> tuple[list, list]:
    """The last table's margin rows and memory rows, so that one part can be measured again alone."""
    lines = RESULTS.read_text().splitlines() if RESULTS.exists() else []
    margins = [line for line in lines if line.startswith("| unet3d_") and "-denoised |" in line]
    memory = [line for line in lines if line.startswith("| unet3d_") and line.count("|") == 7
              and line.split("|")[2].strip() in ("float32", "bfloat16")]
    return margins, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="184,256,256")
    parser.add_argument("--margins", type=int, nargs="+", default=[0, 4, 8, 12, 16, 24])
    parser.add_argument("--part", default="all", choices=["all", "margins", "memory"],
                        help="measure only one part; the other part's rows are kept from the last table")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "copick-soup-bench-tiling"))
    parser.add_argument("--forward", nargs=2, metavar=("VARIANT", "ZxYxX"), help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward:
        return forward_child(*args.forward, args.bf16)
    shape = tuple(int(v) for v in args.shape.split(","))
    config = Path(args.data) / "x".join(map(str, shape)) / "copick.json"
    if not config.exists():
        simulate_project(config.parent, runs=1, shape=shape, tomo_types=("denoised",), seed=5150)
    volume = open_tomogram(open_project(config).runs[0], 10.012, "denoised")
    soup = Ensemble.load("default")
    torch.manual_seed(0)
    kept = kept_rows()
    margins = margin_rows(soup, volume, args.margins) if args.part != "memory" else kept[0]
    memory = memory_rows([(64, 64, 64), (96, 128, 128)]) if args.part != "margins" else kept[1]
    full = (184, 630, 630)
    auto = [(v, gb, InferenceSettings(window=None, max_memory=gb).resolved().tiling(full, [create_model(v).config]))
            for v in ("unet3d_tiny", "unet3d_medium", "unet3d_large") for gb in (0.5, 1, 2, 4)]
    chosen = [f"| {v} | {gb:g} | {tiling.describe(full)} |" for v, gb, tiling in auto]
    publish(RESULTS, [
        f"Crop tiling: margins against a borderless reference, and window memory (cpu, {time.strftime('%Y-%m-%d')})",
        "",
        f"Margins: the default soup's denoised members on one simulated {args.shape} tomogram (seed 5150). Reference: "
        "one window over the whole tomogram. Picks changed: reference picks missed or moved by more than a voxel.",
        "",
        *markdown(["member", "tiling", "windows", "max abs diff", "99.9% abs diff", "picks changed"], margins),
        "",
        "Network memory: peak RSS of one forward pass (MB, in a fresh process), and `forward_memory`'s estimate.",
        "",
        *markdown(["model", "precision", "window", "measured MB", "estimate MB", "estimate covers it"], memory),
        "",
        "What `--window auto` picks on this CPU for a 184x630x630 tomogram (one member, pick's precision):",
        "",
        *markdown(["model", "--max-memory GB", "tiling"], chosen),
    ])


if __name__ == "__main__":
    main()
