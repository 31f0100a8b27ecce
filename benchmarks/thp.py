"""What transparent huge pages do for a U-Net forward pass on the CPU: copick-soup's THP_MEM_ALLOC_ENABLE=1
(set when copick_soup is imported before torch) against torch's default, each in its own process (torch reads
the variable once).

Each variant runs a batch of 4 windows (64^3, the batch `pick` uses) under the precision `pick` uses on this CPU,
with random weights, `--calls` times after a warm-up; the table gives the median seconds per call and the
minor page faults per call. Prints a table and writes benchmarks/results/pick-thp.md.

    python benchmarks/thp.py [--variants unet3d_tiny unet3d_medium unet3d_large] [--calls 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from table import cpu, kernel_thp_mode, markdown, publish  # benchmarks/table.py

RESULTS = Path(__file__).parent / "results" / "pick-thp.md"


def measure(variant: str, calls: int) -> dict:
    """Median seconds and minor faults per forward call, in this process."""
    import resource

    import torch

    from copick_soup.device import amp_dtype
    from copick_soup.model import create_model

    torch.manual_seed(0)
    model = create_model(variant, n_classes=6).eval()
    x = torch.randn(4, 1, 64, 64, 64)
    amp = amp_dtype("auto", "cpu")
    seconds, faults = [], []
    with torch.inference_mode():
        for _ in range(calls + 1):  # the first call is a warm-up
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                model(x).float()
            seconds.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return dict(seconds=sorted(seconds[1:])[calls // 2], faults=sorted(faults[1:])[calls // 2],
                precision=str(amp).replace("torch.", "") if amp else "float32")


def in_subprocess(variant: str, calls: int, thp: str) -> dict:
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE=thp)
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--calls", str(calls)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["unet3d_tiny", "unet3d_medium", "unet3d_large"])
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.calls)))
        return
    rows = []
    for variant in args.variants:
        off, on = (in_subprocess(variant, args.calls, thp) for thp in ("0", "1"))
        rows.append(f"| {variant} | {on['precision']} | {off['seconds']:.3f} | {on['seconds']:.3f} | "
                    f"{off['seconds'] / on['seconds']:.2f} | {off['faults']} | {on['faults']} |")
        print(rows[-1], flush=True)
    publish(RESULTS, [
        f"U-Net forward pass on the CPU, batch 4 x 64^3, torch's default allocation vs huge pages "
        f"({cpu()}; kernel THP mode {kernel_thp_mode()}; "
        f"{time.strftime('%Y-%m-%d')})",
        f"Median of {args.calls} calls after a warm-up, each setting in its own process.",
        "",
        *markdown(["model", "precision", "default s/call", "huge pages s/call", "speed-up", "default faults/call",
                   "huge pages faults/call"], rows),
    ])


if __name__ == "__main__":
    main()
