"""Accuracy of a soup on freshly simulated, held-out runs: per-class CZII F4 for each tiling, runtime and TTA setting.

The seed is one no recipe trains on, so the runs are new to the soup. Prints a table and writes
benchmarks/results/accuracy.md (accuracy-gpu.md with --device cuda; another --seed N writes accuracy-seedN.md;
--results NAME any other name).

    python benchmarks/accuracy.py [--soup default] [--runs 3] [--shape full] [--tta 1] [--amp auto] [--device cpu]
        [--window auto 64] [--runtime auto] [--results accuracy.md]

--window: the tilings to score, `auto` (pick's default: windows shaped to the tomogram, margins cropped) and N
(N³ cubes, Gaussian-blended with overlap 0.25, the classic sliding window); by default both, so the table shows
whether pick's default tiling keeps the classic one's accuracy, per class too. --runtime: what runs the networks
(auto: as `pick` decides, OpenVINO on a CPU; torch; openvino), scored the same way, so a runtime is adopted only if
it keeps the picks' accuracy (accuracy-runtime.md):
    python benchmarks/accuracy.py --window auto --runtime torch openvino --results accuracy-runtime.md

Full-size runs by default: a 184x630x630 experimental-profile run holds ~100 particles, about a dozen of each rare
class, so three of them score beta-galactosidase (weight 2) on ~25 particles rather than on a handful. One tiling
at TTA 1 takes 10-15 minutes on 2 CPU cores; TTA 4 costs 4x that.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from table import device_name, markdown  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.device import precision_name
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import score_project
from copick_soup.objects import FULL_SHAPE
from copick_soup.pick import PickOptions, pick_runs
from copick_soup.simulate import simulate_project

RESULTS = Path(__file__).parent / "results" / "accuracy.md"
DEFAULT_SEED = 4242


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soup", default="default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shape", default="full", help="Z,Y,X or 'full' (184,630,630)")
    parser.add_argument("--profile", default="experimental", choices=["simulated", "experimental"])
    parser.add_argument("--tta", type=int, nargs="+", default=[1])
    parser.add_argument("--amp", nargs="+", default=["auto"], help="precisions to score (auto: as `pick` does)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--window", nargs="+", default=["auto", "64"], help="auto, or N for N³ Gaussian cubes")
    parser.add_argument("--margin", type=int, nargs="+", default=[None], help="margins to try with --window auto")
    parser.add_argument("--runtime", nargs="+", default=["auto"],
                        help="auto (as pick: OpenVINO on a CPU), torch, openvino (CPU)")
    parser.add_argument("--results", default=None, help="results file name (default accuracy[-seedN][-gpu].md)")
    parser.add_argument("--out", default="/tmp/copick-soup-bench-accuracy")
    args = parser.parse_args()
    shape = FULL_SHAPE if args.shape == "full" else tuple(int(v) for v in args.shape.split(","))
    config = Path(args.out) / f"{args.profile}-{args.seed}-{args.runs}-{'x'.join(map(str, shape))}" / "copick.json"
    if not config.exists():
        simulate_project(config.parent, runs=args.runs, shape=shape, profile=args.profile, seed=args.seed)
    root = open_project(config)
    soup = Ensemble.load(args.soup, device=args.device)

    rows = []
    tilings = [(w, m) for w in args.window for m in (args.margin if w == "auto" else [None])]
    for amp, tta, (window, margin), runtime in itertools.product(args.amp, args.tta, tilings, args.runtime):
        start = time.perf_counter()
        settings = InferenceSettings(tta=tta, amp=amp, device=args.device, runtime=runtime,
                                     window=None if window == "auto" else int(window),
                                     **({} if margin is None else dict(margin=margin)))
        opts = PickOptions(user_id="accuracy", session_id=f"tta{tta}-{amp}-{window}-{margin}-{runtime}",
                           overwrite=True)
        pick_runs(root, soup, None, settings, opts, echo=lambda m: None)
        seconds = time.perf_counter() - start
        score = score_project(root, "curation", "accuracy", "0", opts.session_id)
        truth = {c.name: c.tp + c.fn for c in score.classes}
        tiling = soup.tiling(shape, settings).describe(shape)
        rows.append(f"| {tiling} | {settings.engine} | {tta} | {precision_name(settings.amp_dtype)} | "
                    f"{score.weighted:.3f} | " + " | ".join(f"{c.fbeta():.3f}" for c in score.classes)
                    + f" | {seconds:.0f} |")
        print(rows[-1], flush=True)
        write_table(args, soup, shape, truth, rows)  # after every row: a run cut short keeps what it scored
    print(write_table(args, soup, shape, truth, rows))


def write_table(args, soup, shape, truth, rows) -> str:
    names = [c.name for c in soup.classes]
    table = "\n".join([
        f"Accuracy of soup '{soup.name}' on {args.runs} fresh {args.profile}-profile runs of "
        f"{'x'.join(map(str, shape))} voxels (seed {args.seed}, {sum(truth.values())} particles: "
        + ", ".join(f"{n} {truth[n]}" for n in names) + f"); {device_name(args.device)}, "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["tiling", "runtime", "TTA", "precision", "weighted F4", *names, "seconds"], rows),
    ])
    seed = "" if args.seed == DEFAULT_SEED else f"-seed{args.seed}"  # another seed: another table, kept beside
    results = RESULTS.with_name(args.results or f"accuracy{seed}{'-gpu' if args.device.startswith('cuda') else ''}.md")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
