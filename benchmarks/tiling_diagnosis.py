"""Why the crop tiling (`--window auto`) scores below 64³ cubes (#23): the same runs under several tilings, scored
at the soup's thresholds and at the best thresholds for these runs ("oracle": a diagnosis, not a result; it says
how much of a gap re-searching the thresholds could close).

    python benchmarks/tiling_diagnosis.py [--soup default] [--runtime openvino] [--tilings gauss64 crop64 ...]
        [--runs 3] [--shape 184,256,256] [--seed 777] [--cache DIR]

Runs are simulated as benchmarks/norms.py simulates them (and shared with it, under --out). `--cache DIR` keeps each
tiling's blended heatmaps there, so that a re-run only re-scores. Prints the table and writes
benchmarks/results/tiling-diagnosis.md (tiling-diagnosis-NAME.md for a soup folder NAME other than the default).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from norms import add_run_arguments, fresh_runs  # benchmarks/norms.py: the same runs
from table import markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.data.picks import read_picks
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.ensemble import blend
from copick_soup.ensemble.peaks import heatmaps_to_picks
from copick_soup.ensemble.thresholds import FLOOR, best_thresholds, threshold_counts
from copick_soup.ensemble.tiling import Tiling
from copick_soup.metric.czii import score_picks

RESULTS = Path(__file__).parent / "results"


def tilings(soup: Ensemble, shape) -> dict:
    """{name: Tiling}: the default cubes, the same cubes cropped, `--window auto` cropped and blended, 96³ crops."""
    auto = soup.tiling(shape, InferenceSettings(window=None, runtime="torch"))
    return {"gauss64": Tiling.cube(64),
            "crop64": Tiling((64, 64, 64), "crop", margin=8),
            "auto": auto,
            "gauss-auto": Tiling(auto.window, "gaussian", 0.25),
            "crop96": Tiling((96, 96, 96), "crop", margin=16)}


def blended_heatmap(soup: Ensemble, run, tiling: Tiling, settings: InferenceSettings, cache: Path | None):
    """The soup's blended (C, Z, Y, X) heatmap of a run under `tiling`, from the cache when it is there."""
    path = cache / f"{run.name}.npy" if cache else None
    if path and path.exists():
        return np.load(path).astype(np.float32)
    members = [m for m in soup.members if m.weight > 0]  # a weight-0 member changes no pick
    heatmaps = [soup.heatmap(soup.volume(run, m, settings, echo=lambda _: None), settings, member=m, tiling=tiling)
                for m in members]
    heat = blend(heatmaps, [m.weight for m in members]).astype(np.float16)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, heat)
    return heat.astype(np.float32)


def diagnose(soup: Ensemble, root, tiling: Tiling, settings: InferenceSettings, cache: Path | None):
    """(Score at the soup's thresholds, oracle thresholds, oracle Score) over the project's runs."""
    pairs, counts = [], 0
    floor = {c.name: FLOOR for c in soup.classes}
    for run in root.runs:
        truth = read_picks(run, soup.class_names, "curation", "0")
        heat = blended_heatmap(soup, run, tiling, settings, cache)
        candidates = heatmaps_to_picks(heat, soup.classes, soup.voxel_size, floor, soup.nms_scale)
        picks = soup.cut(candidates)
        pairs.append((truth, {name: positions for name, (positions, _) in picks.items()}))
        counts = counts + threshold_counts(soup.cut(candidates, floor), truth, soup.classes)
    oracle_thresholds, oracle = best_thresholds(counts, soup.classes)
    return score_picks(pairs, soup.classes), oracle_thresholds, oracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soup", default="default")
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--tilings", nargs="+", default=["gauss64", "crop64", "auto", "gauss-auto", "crop96"])
    add_run_arguments(parser)
    parser.add_argument("--cache", default=None, help="a folder for the heatmaps (one per soup and runtime)")
    args = parser.parse_args()
    config, shape = fresh_runs(args)
    root, soup = open_project(config), Ensemble.load(args.soup)
    settings = InferenceSettings(window=64, runtime=args.runtime).resolved()  # the runtime; tilings are set apart
    known = tilings(soup, shape)
    rows = []
    for name in args.tilings:
        if name not in known:
            parser.error(f"--tilings: unknown '{name}'; choose from {', '.join(known)}")
        start = time.perf_counter()
        cache = Path(args.cache) / name if args.cache else None
        score, thresholds, oracle = diagnose(soup, root, known[name], settings, cache)
        rows.append(f"| {known[name].describe(shape)} | {score.weighted:.3f} | "
                    + " | ".join(f"{c.fbeta():.3f}" for c in score.classes)
                    + f" | {oracle.weighted:.3f} | {' '.join(f'{t:g}' for t in thresholds.values())} | "
                    f"{time.perf_counter() - start:.0f} |")
        print(rows[-1], flush=True)
    name = "" if args.soup == "default" else "-" + Path(args.soup).name
    publish(RESULTS / f"tiling-diagnosis{name}.md", [
        f"Tilings of soup '{args.soup}' ({args.runtime}, TTA 1) on {args.runs} fresh experimental-profile runs of "
        f"{args.shape} (seed {args.seed}): F4 at the soup's thresholds, and the weighted F4 at the best thresholds "
        f"for these runs (oracle, a diagnosis only; its thresholds in class order); seconds include cached "
        f"heatmaps; {time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["tiling", "weighted F4", *soup.class_names, "oracle F4", "oracle thresholds", "seconds"], rows),
    ])


if __name__ == "__main__":
    main()
