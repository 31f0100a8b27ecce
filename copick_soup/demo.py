"""The `make demo` job: simulate held-out experimental-like runs, pick them with the default soup, score the
picks against the ground truth and draw both on tomogram slices."""

from __future__ import annotations

from pathlib import Path

from copick_soup.data import open_project, open_tomogram, read_picks
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import score_project
from copick_soup.pick import PickOptions, pick_runs, summary_table
from copick_soup.simulate import simulate_project
from copick_soup.simulate.project import TRUTH_SESSION, TRUTH_USER
from copick_soup.viz import save_slices_png

DEMO_USER, DEMO_SESSION = "copick-soup", "0"


def run_demo(out, runs: int = 2, shape=(96, 256, 256), seed: int = 7, soup: str = "default", tta: int = 1,
             device: str = "cpu", echo=print) -> dict:
    """Run the demo into `out`. A project an earlier demo simulated there is reused and its picks replaced.

    The seed differs from those of the recipes' training phantoms, so the runs are new to the soup.
    """
    out = Path(out)
    config = out / "project" / "copick.json"
    if not config.exists():
        echo(f"simulating {runs} experimental-profile run(s) of {'x'.join(map(str, shape))} voxels ...")
        simulate_project(out / "project", runs=runs, seed=seed, shape=shape, profile="experimental")
    root = open_project(config)
    loaded = Ensemble.load(soup, device)
    echo(f"picking with soup '{loaded.name}' ({len(loaded.members)} member(s), TTA {tta}) ...")
    opts = PickOptions(user_id=DEMO_USER, session_id=DEMO_SESSION, overwrite=True, qc=str(out / "qc"))
    results = pick_runs(root, loaded, None, InferenceSettings(tta=tta, device=device), opts, echo=echo)
    echo(summary_table(results, loaded.classes) + "\n")

    result = score_project(root, TRUTH_USER, DEMO_USER, TRUTH_SESSION, DEMO_SESSION)
    echo(result.table())

    first = root.runs[0]
    names = [c.name for c in loaded.classes]
    colors = {obj.name: obj.color for obj in root.pickable_objects}
    picture = save_slices_png(open_tomogram(first, loaded.voxel_size, "denoised"), out / "picks.png",
                              loaded.voxel_size, loaded.classes,
                              truth=read_picks(first, names, TRUTH_USER, TRUTH_SESSION),
                              picks=read_picks(first, names, DEMO_USER, DEMO_SESSION), colors=colors,
                              title=f"{first.name} (denoised): ground truth (circles) and soup picks (crosses)")
    overlay = root.config.overlay_root.replace("local://", "")
    echo(f"\nproject:  {config}")
    echo(f"picks:    {overlay}/ExperimentRuns/*/Picks/{DEMO_USER}_{DEMO_SESSION}_*.json")
    echo(f"picture:  {picture}")
    echo(f"QC:       {out / 'qc'}/<run>.png (the picks per class, and each class's peak scores with its threshold)")
    return dict(config=config, picture=picture, score=result, qc=out / "qc")
