"""The `make demo` job: simulate a small project, score noisy copies of the truth, draw the picks.

Until a trained soup ships, the "picks" here are the ground truth jittered, thinned and salted with false
positives, which shows the whole copick round trip and what the metric makes of typical mistakes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from copick_soup.data import open_project, open_tomogram, read_picks, write_picks
from copick_soup.metric import score_project
from copick_soup.objects import VOXEL_SIZE, classes_from_root
from copick_soup.simulate import simulate_project
from copick_soup.simulate.project import TRUTH_SESSION, TRUTH_USER
from copick_soup.viz import save_slices_png

DEMO_USER, DEMO_SESSION = "demo-jitter", "0"


def jittered_picks(truth: dict, classes, shape_angstrom, rng, keep=0.9, jitter=0.25, false_rate=0.15) -> dict:
    """{class: (positions, scores)}: each true point kept with probability `keep` and moved by a Gaussian of
    `jitter` x radius per axis, plus `false_rate` x N picks at random places."""
    out = {}
    for cls in classes:
        points = truth.get(cls.name, np.zeros((0, 3)))
        kept = points[rng.random(len(points)) < keep]
        moved = kept + rng.normal(scale=jitter * cls.radius, size=kept.shape)
        n_false = rng.poisson(false_rate * max(len(points), 1))
        false = rng.uniform(0, 1, size=(n_false, 3)) * np.asarray(shape_angstrom)
        positions = np.concatenate([moved, false])
        scores = np.concatenate([rng.uniform(0.5, 1.0, len(moved)), rng.uniform(0.0, 0.6, n_false)])
        out[cls.name] = (positions, scores)
    return out


def run_demo(out, runs: int = 2, shape=(96, 256, 256), seed: int = 0, echo=print) -> dict:
    """Run the demo into `out`, reusing a project that an earlier demo simulated there."""
    out = Path(out)
    config = out / "project" / "copick.json"
    if not config.exists():
        echo(f"simulating {runs} run(s) of {'x'.join(map(str, shape))} voxels ...")
        simulate_project(out / "project", runs=runs, seed=seed, shape=shape, profile="experimental")
    root = open_project(config)
    classes = classes_from_root(root)
    names = [c.name for c in classes]
    rng = np.random.default_rng(seed)
    for run in root.runs:
        tomogram = open_tomogram(run, VOXEL_SIZE, "denoised")
        extent = np.asarray(tomogram.shape[::-1]) * VOXEL_SIZE  # (x, y, z) Å
        truth = read_picks(run, names, TRUTH_USER, TRUTH_SESSION)
        write_picks(run, jittered_picks(truth, classes, extent, rng), DEMO_USER, DEMO_SESSION, overwrite=True)

    result = score_project(root, TRUTH_USER, DEMO_USER, TRUTH_SESSION, DEMO_SESSION)
    echo(result.table())

    first = root.runs[0]
    colors = {obj.name: obj.color for obj in root.pickable_objects}
    picture = save_slices_png(open_tomogram(first, VOXEL_SIZE, "denoised"), out / "picks.png", VOXEL_SIZE, classes,
                              truth=read_picks(first, names, TRUTH_USER, TRUTH_SESSION),
                              picks=read_picks(first, names, DEMO_USER, DEMO_SESSION), colors=colors,
                              title=f"{first.name} (denoised): truth (circles) and demo picks (crosses)")
    overlay = root.config.overlay_root.replace("local://", "")
    echo(f"\nproject:  {config}")
    echo(f"picks:    {overlay}/ExperimentRuns/*/Picks/{DEMO_USER}_{DEMO_SESSION}_*.json")
    echo(f"picture:  {picture}")
    return dict(config=config, picture=picture, score=result)
