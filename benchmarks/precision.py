"""Float32, bf16 and INT8 for shipped soups on a CPU (OpenVINO): speed per member and per tomogram, and held-out
F4 per class, so that a precision is adopted only where it keeps the picks.

INT8 here is post-training quantisation with NNCF on OpenVINO's graph (the bench extra), not adopted: it loses picks
(docs/decisions.md). The shipped INT8 member (`--soups fast fast-int8`) starts from the same ranges placed on the
torch model and is fine-tuned after (model/int8.py, train/quantise.py). Each member's converted network gets its
activations' ranges (min-max) from windows of simulated calibration runs (seeds no recipe, test or other benchmark
uses; both phantom engines), normalised as the member normalises its input; weights are quantised per channel, and what
NNCF leaves unquantised runs in the precision `pick` would use (bf16 where native, else float32).

Two tables, one file:
  per window   each member the soup runs, one network call on the window `pick` uses for --shape, in each
               precision: the fastest of --calls calls in this one process (other processes on the CPU slow all
               rows alike, not equally: read the ratios)
  per run      each subject (the soup, and with --members each member alone at its own thresholds) picks the
               held-out runs in each precision: seconds per run (the whole `pick_run`, the mean over runs after
               the first, which compiles each member), F4 per class, and how many of float32's picks the
               precision finds again (same class, within a fifth of the class radius; the largest move among
               them, in voxels)

Held-out runs are simulated with --engine: `sart` by default, the engine no shipped member was trained on (issue
46: accuracy is judged on an engine the soup never saw); `tilt` and `blobs` are its training engines. --soups names
the shipped soups (or soup.json files) to compare: `default`, and `fast` (its tiny denoised member alone).

    python benchmarks/precision.py                 # 4 sart runs of 80x160x160: results/precision.md
    python benchmarks/precision.py --shape full --runs 1 --precisions float32 int8 --out precision-full.md
                                                   # the full-tomogram table (issue 48's 60 s)
"""

from __future__ import annotations

import copick_soup  # noqa: F401  (first, as in `copick-soup pick`: its huge-page setting must precede torch)

# isort: split
import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.data.picks import read_picks
from copick_soup.data.tomogram import normalisation_stats, run_volume
from copick_soup.device import cpu_has_bf16
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import score_project
from copick_soup.ensemble.runtimes import OpenVinoPredictor
from copick_soup.objects import FULL_SHAPE
from copick_soup.pick import PickOptions, pick_run
from copick_soup.simulate import simulate_project

RESULTS = Path(__file__).parent / "results" / "precision.md"
CALIBRATION = dict(seed=8100, runs=2, shape=(96, 192, 192), windows=16, side=64)  # runs: one blobs, one tilt
HELD_OUT_SEED = 8200
AGREE = 0.2  # a pick found again: same class, within this fraction of the class radius


QUANTISED = {}  # id of a torch model -> its quantised OpenVINO model, made once per process


def quantise(network, windows):
    """NNCF's post-training quantisation of an OpenVINO model on these (1, 1, D, H, W) float32 windows.

    Activation ranges are the calibration's full min-max: NNCF's default quantiles clip the rare high activations,
    which are the particles, and cut the heatmap's peaks (a tiny member's highest score 0.20 came out 0.06; with
    min-max within 0.02). The head, the 1x1x1 convolution that makes the heatmap, stays in floating point. (The
    `pick --amp int8` path built on this, with cached INT8 members, is commit f62beae, reverted: docs/decisions.md.)"""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    head = [op.get_friendly_name() for op in network.get_ordered_ops() if op.get_type_name() == "Convolution"][-1]
    return nncf.quantize(network, nncf.Dataset(windows), subset_size=len(windows), fast_bias_correction=True,
                         ignored_scope=nncf.IgnoredScope(names=[head]),
                         advanced_parameters=AdvancedQuantizationParameters(
                             activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))


class Int8Predictor(OpenVinoPredictor):
    """OpenVinoPredictor of the member's network quantised to INT8 by NNCF on calibration windows."""

    def __init__(self, model, amp_dtype, views, windows):
        super().__init__(model, amp_dtype, views)
        if id(model) not in QUANTISED:  # as `pick --amp int8` quantises (ensemble/int8.py)
            QUANTISED[id(model)] = quantise(self.model, windows)
        self.model = QUANTISED[id(model)]


def calibration_windows(config: Path, soups: list[Ensemble]) -> dict:
    """{member name: [(1, 1, s, s, s) float32 windows]} cut at random from the calibration runs."""
    root = open_project(config)
    rng = np.random.default_rng(CALIBRATION["seed"])
    side, out, soup = CALIBRATION["side"], {}, soups[0]
    for member in {m.manifest.name: m for s in soups for m in s.members}.values():
        windows = []
        for run in root.runs:
            volume = run_volume(run, soup.voxel_size, member.manifest.tomo_type, lambda line: None)
            centre, scale = normalisation_stats(volume, member.manifest.normalisation_method)
            array = (np.asarray(volume[:], dtype=np.float32) - centre) / scale
            for _ in range(CALIBRATION["windows"] // len(root.runs)):
                z, y, x = (int(rng.integers(0, n - side + 1)) for n in array.shape)
                windows.append(np.ascontiguousarray(array[None, None, z:z + side, y:y + side, x:x + side]))
        out[member.manifest.name] = windows
    return out


def with_precision(soup: Ensemble, precision: str, windows: dict) -> tuple[Ensemble, InferenceSettings]:
    """A copy of the soup whose OpenVINO predictors run in `precision` (float32, bf16, int8), and its settings."""
    amp = "bf16" if precision == "bf16" or (precision == "int8" and cpu_has_bf16()) else "none"
    settings = InferenceSettings(device="cpu", runtime="openvino", amp=amp)
    copy = Ensemble(soup.name, soup.members, soup.classes, soup.voxel_size, soup.thresholds, soup.nms_scale,
                    soup.overlap, soup.manifest)
    for member in soup.members:  # converted (and quantised) here, outside the timing; compiled on first use
        if member.weight > 0 or len(soup.members) == 1:
            key = (id(member.model), settings.amp, settings.tta)
            copy.compiled[key] = (Int8Predictor(member.model, settings.amp_dtype, settings.views,
                                                windows[member.manifest.name]) if precision == "int8"
                                  else OpenVinoPredictor(member.model, settings.amp_dtype, settings.views))
    return copy, settings


def per_window(soups, precisions, windows, shape, calls: int) -> list[str]:
    """Rows: per member the soups run, the fastest of `calls` calls on pick's window, per precision."""
    rows, soup = [], soups[0]
    members = {m.manifest.name: m for s in soups for m in s.members if m.weight > 0}
    for member in members.values():
        alone = Ensemble(member.manifest.name, [member], soup.classes, soup.voxel_size, soup.thresholds)
        times = {}
        for precision in precisions:
            ensemble, settings = with_precision(alone, precision, windows)
            window = ensemble.tiling(shape, settings).window
            predict = ensemble.predictor(member, settings)
            x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, *window)).astype(np.float32))
            predict(x)  # compile
            seconds = []
            for _ in range(calls):
                start = time.perf_counter()
                predict(x)
                seconds.append(time.perf_counter() - start)
            times[precision] = min(seconds)
        base = times[precisions[0]]
        rows.append(f"| {member.manifest.name} | {'x'.join(map(str, window))} | "
                    + " | ".join(f"{times[p]:.2f} ({base / times[p]:.2f}x)" for p in precisions) + " |")
        print(rows[-1], flush=True)
    return rows


def per_run(subject: Ensemble, precisions, windows, root, label: str) -> list[str]:
    """Rows: the subject picks every held-out run in each precision; seconds per run, F4, agreement."""
    rows, reference = [], None
    for precision in precisions:
        ensemble, settings = with_precision(subject, precision, windows)
        session = f"{label}-{precision}"
        opts = PickOptions(user_id="precision", session_id=session, overwrite=True, keep_candidates=False)
        seconds = [pick_run(run, ensemble, settings, opts, echo=lambda line: None)["seconds"] for run in root.runs]
        seconds = seconds[1:] or seconds  # the first run compiles each member for the runs' window
        score = score_project(root, "curation", "precision", "0", session)
        picks = [read_picks(run, subject.class_names, "precision", session) for run in root.runs]
        reference = reference or picks
        found, total, moved = agreement(reference, picks, subject)
        rows.append(f"| {label} | {precision} | {np.mean(seconds):.1f} | {score.weighted:.3f} | "
                    + " | ".join(f"{c.fbeta():.3f}" for c in score.classes)
                    + f" | {found}/{total} | {moved:.2f} |")
        print(rows[-1], flush=True)
    return rows


def agreement(reference: list, picks: list, soup: Ensemble) -> tuple[int, int, float]:
    """(reference picks found again, their number, the largest move among those found, in voxels)."""
    found = total = 0
    moved = 0.0
    radius = {c.name: c.radius for c in soup.classes}
    for ref_run, run in zip(reference, picks):
        for name, ref in ref_run.items():
            total += len(ref)
            if not len(ref) or not len(run.get(name, [])):
                continue
            distance, _ = cKDTree(run[name]).query(ref)
            near = distance <= AGREE * radius[name]
            found += int(near.sum())
            moved = max(moved, float(distance[near].max(initial=0)) / soup.voxel_size)
    return found, total, moved


def project(folder: Path, runs: int, shape, seed: int, engine: str) -> Path:
    config = folder / f"{engine}-{seed}-{runs}-{'x'.join(map(str, shape))}" / "copick.json"
    if not (config.parent / "simulation.json").exists():  # written last: a project cut short is made again
        shutil.rmtree(config.parent, ignore_errors=True)
        simulate_project(config.parent, runs=runs, shape=shape, seed=seed, engine=engine, crowding=2.0)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="80,160,160", help="Z,Y,X of the held-out runs, or 'full'")
    parser.add_argument("--runs", type=int, default=4, help="held-out runs")
    parser.add_argument("--engine", default="sart", choices=["sart", "blobs", "tilt", "mixed"])
    parser.add_argument("--soups", nargs="+", default=["default", "fast"], help="shipped soups or soup.json files")
    parser.add_argument("--precisions", nargs="+", default=None,
                        help="float32 bf16 int8 (default: all three where bf16 is native, else float32 int8)")
    parser.add_argument("--members", action="store_true", help="also each member alone, at its own thresholds")
    parser.add_argument("--calls", type=int, default=3, help="per window: calls per member and precision")
    parser.add_argument("--out", default=None, help="results file name (default precision.md)")
    parser.add_argument("--data", default="/tmp/copick-soup-bench-precision")
    args = parser.parse_args()
    args.load = os.getloadavg()[0]  # before this process adds to it
    shape = FULL_SHAPE if args.shape == "full" else tuple(int(v) for v in args.shape.split(","))
    precisions = args.precisions or (["float32", "bf16", "int8"] if cpu_has_bf16() else ["float32", "int8"])
    soups = [Ensemble.load(name) for name in args.soups]
    soup = soups[0]
    calibration = project(Path(args.data), CALIBRATION["runs"], CALIBRATION["shape"], CALIBRATION["seed"], "mixed")
    windows = calibration_windows(calibration, soups)
    root = open_project(project(Path(args.data), args.runs, shape, HELD_OUT_SEED, args.engine))
    window_rows = per_window(soups, precisions, windows, shape, args.calls)
    run_rows = [row for s in soups for row in per_run(s, precisions, windows, root, f"soup {s.name}")]
    if args.members:
        for member in [m for m in soup.members if m.weight > 0]:
            own = soup.manifest.validation["members"][member.manifest.name]["thresholds"]
            alone = Ensemble(member.manifest.name, [member], soup.classes, soup.voxel_size, own, soup.nms_scale)
            run_rows += per_run(alone, precisions, windows, root, member.manifest.name)
    publish(RESULTS.with_name(args.out or RESULTS.name), table(args, shape, precisions, soup, window_rows, run_rows))


def table(args, shape, precisions, soup, window_rows, run_rows) -> list[str]:
    return [
        f"Float32, bf16 and INT8 (OpenVINO; INT8: NNCF post-training quantisation) for the soups "
        f"{', '.join(args.soups)} ({cpu()}; "
        f"{time.strftime('%Y-%m-%d')})",
        f"Held-out: {args.runs} `{args.engine}` runs of {'x'.join(map(str, shape))} (seed {HELD_OUT_SEED}, crowding "
        f"2). INT8 calibration: {CALIBRATION['windows']} windows of {CALIBRATION['side']}³ per member from "
        f"{CALIBRATION['runs']} `mixed` runs of {'x'.join(map(str, CALIBRATION['shape']))} (seed "
        f"{CALIBRATION['seed']}); what NNCF leaves unquantised runs in bf16 where native, else float32.",
        f"Load average when it started: {args.load:.1f} on {os.cpu_count()} cores (other work on the CPU slows every "
        "row): compare rows of one table, not tables.",
        "",
        "Per window: seconds per network call on the window `pick` uses (speed-up over the first precision).",
        "",
        *markdown(["member", "window", *precisions], window_rows),
        "",
        f"Per run: seconds per run (`pick_run`: reading, every member's windows, peaks, writing; the mean over runs "
        "after the first, which compiles each member, or with one run its time, compiling included), F4, and "
        "float32's picks found "
        f"again (same class, within {AGREE:g} x its radius; the largest move among them, voxels).",
        "",
        *markdown(["subject", "precision", "s/run", "F4", *soup.class_names, "float32's picks found", "moved, vox"],
                  run_rows),
    ]


if __name__ == "__main__":
    main()
