"""Per network call: our predictor (`TorchPredictor`, as `pick` builds it) against the one MONAI's side of
benchmarks/pick.py runs, on the same window, model, precision and TTA views.

A full-size run of benchmarks/pick.py takes minutes to an hour per engine, and on the 2-core CPU here two runs of
the same engine differ by about 5%; more than 97% of either run is network calls. This times the calls alone in
short blocks that alternate which predictor goes first, so a drift of the machine hits both alike: a ratio near 1
in every block says a full-size row below 1 was noise, not a slower engine. Prints a table and writes
benchmarks/results/pick-calls.md. Example (the row below target in pick-full-tta8.md):
    python benchmarks/pick_calls.py --variants unet3d_medium --tta 8
"""

from __future__ import annotations

import copick_soup  # noqa: F401  (first, as in `copick-soup pick`: its huge-page setting must precede torch)

# isort: split
import argparse
import itertools
import time
from pathlib import Path

import torch
from pick import WINDOW, bench_model, monai_predictor
from table import device_name, markdown, publish
from thp import huge_pages_line

from copick_soup.device import amp_dtype, default_batch_size, precision_name
from copick_soup.ensemble.runtimes import TorchPredictor
from copick_soup.ensemble.tta import tta_views

RESULTS = Path(__file__).parent / "results" / "pick-calls.md"
N_CLASSES = 6


def block_seconds(predict, x, calls: int, device: str) -> float:
    """Seconds per call over `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        predict(x)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def compare_calls(variant: str, tta: int, amp, batch: int, args) -> str:
    model = bench_model(variant, N_CLASSES, args.device)
    views = tta_views(tta)
    ours = TorchPredictor(model, args.device, amp, views)
    theirs = monai_predictor(model, views)

    def monai(x):
        with torch.inference_mode(), torch.autocast(torch.device(args.device).type, dtype=amp or torch.float32,
                                                    enabled=amp is not None):
            return theirs(x)

    x = torch.randn(batch, 1, WINDOW, WINDOW, WINDOW, generator=torch.Generator().manual_seed(0)).to(args.device)
    ours(x), monai(x)  # kernel selection and caches, before timing
    times = {"ours": [], "monai": []}
    for b in range(args.blocks):
        order = [("ours", ours), ("monai", monai)]
        for name, predict in order if b % 2 == 0 else order[::-1]:
            times[name].append(block_seconds(predict, x, args.calls, args.device))
    ratios = [m / o for o, m in zip(times["ours"], times["monai"])]
    return (f"| {variant} | {tta} | {batch} | {precision_name(amp)} | {min(times['ours']) * 1e3:.1f} | "
            f"{min(times['monai']) * 1e3:.1f} | {min(ratios):.3f}-{max(ratios):.3f} |")


def write_table(args, rows) -> str:
    lines = [
        f"Per network call: pick's predictor vs MONAI's side of benchmarks/pick.py ({args.device}: "
        f"{device_name(args.device)}; "
        f"window {WINDOW}; {time.strftime('%Y-%m-%d')})",
        f"{args.blocks} blocks of {args.calls} calls per predictor, alternating which goes first. ms/call: the "
        "fastest block. Speed-up: MONAI's time / ours, per block (lowest-highest).",
        huge_pages_line(),
        "",
        *markdown(["model", "TTA", "batch", "precision", "ours ms/call", "MONAI ms/call", "speed-up per block"],
                  rows),
    ]
    return publish(RESULTS.with_name(args.out), lines, echo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", default=["unet3d_tiny", "unet3d_medium", "unet3d_large"])
    parser.add_argument("--tta", type=int, nargs="+", default=[8])
    parser.add_argument("--amp", default="auto", help="autocast for both, as `pick` resolves it")
    parser.add_argument("--batch", type=int, default=None, help="windows per call (default: `pick`'s)")
    parser.add_argument("--calls", type=int, default=6, help="calls per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per predictor")
    parser.add_argument("--out", default=RESULTS.name, help="results file name")
    args = parser.parse_args()
    amp = amp_dtype(args.amp, args.device)
    batch = args.batch or default_batch_size(args.device)
    rows = []
    for variant, tta in itertools.product(args.variants, args.tta):
        rows.append(compare_calls(variant, tta, amp, batch, args))
        print(rows[-1], flush=True)
        write_table(args, rows)
    print(write_table(args, rows))


if __name__ == "__main__":
    main()
