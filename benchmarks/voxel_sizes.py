"""Peak memory of `pick` on runs stored at other voxel sizes than the soup's.

A run at 10.000 Å (how the portal and Kaggle store the CZII tomograms) is read as it is; one at 13.48 Å is
resampled to the soup's 10.012 Å as it is read, slab by slab (data/tomogram.py's ResampledArray). Neither should
hold more than a run stored at 10.012 Å: the target is at most 1.2x its peak. Each run covers the same field of
view, so the resampled one is picked on the same grid as the others. Peak memory is the peak RSS above the RSS
before the call (benchmarks/memory.py), with the default soup's denoised member.

    python benchmarks/voxel_sizes.py [--shape 184,384,384 | --shape full]

Prints a table and writes benchmarks/results/voxel-sizes.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from memory import PeakRSS  # benchmarks/memory.py
from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.model.manifest import SHIPPED
from copick_soup.objects import VOXEL_SIZE
from copick_soup.pick import PickOptions, pick_run
from copick_soup.simulate import simulate_project

RESULTS = Path(__file__).parent / "results" / "voxel-sizes.md"
SIZES = (VOXEL_SIZE, 10.0, 13.48)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="184,384,384", help="Z,Y,X at 10.012 Å, or 'full' (184,630,630)")
    parser.add_argument("--member", default=str(SHIPPED / "default" / "unet3d_tiny-denoised.json"))
    parser.add_argument("--out", default="/tmp/copick-soup-bench-voxel-sizes")
    args = parser.parse_args()
    shape = (184, 630, 630) if args.shape == "full" else tuple(int(v) for v in args.shape.split(","))
    ensemble = Ensemble.load(args.member)
    settings = InferenceSettings()
    rows, base = [], None
    for size in SIZES:
        stored = tuple(max(int(round(n * VOXEL_SIZE / size)), 64) for n in shape)  # the same field of view
        config = Path(args.out) / f"{'x'.join(map(str, shape))}-{size:g}" / "copick.json"
        if not config.exists():
            simulate_project(config.parent, runs=1, shape=stored, voxel_size=size, seed=77, tomo_types=("denoised",))
        run = open_project(config).runs[0]
        messages = []
        start = time.perf_counter()
        with PeakRSS() as peak:
            pick_run(run, ensemble, settings, PickOptions(user_id="bench", overwrite=True), echo=messages.append)
        seconds = time.perf_counter() - start
        base = base or peak.gb
        read = "as it is" if not messages else messages[0].split(": ", 1)[1].split(" (")[0]
        rows.append(f"| {size:g} | {'x'.join(map(str, stored))} | {read} | {seconds:.0f} | {peak.gb:.2f} | "
                    f"{peak.gb / base:.2f} |")
        print(rows[-1], flush=True)
    publish(RESULTS, [
        f"Peak memory of pick (unet3d_tiny-denoised of the default soup at pick's defaults: TTA 1, --window auto) "
        f"on one run per voxel size, each covering the field of a {'x'.join(map(str, shape))} run at "
        f"{VOXEL_SIZE:g} Å; "
        f"{cpu()}, {time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["stored at (Å)", "stored shape", "read", "seconds", "peak GB", "x the 10.012 Å run"], rows),
        "",
        "Target: at most 1.2x the run stored at the soup's own size.",
    ])


if __name__ == "__main__":
    main()
