"""Where a `pick` process's memory goes: the whole process's resident memory (VmRSS, and VmHWM, its peak) after
each stage of picking one run with the default soup, as the operating system counts it (its OOM killer, a Ray
node's memory monitor). Linux only (/proc/self/status; /proc/self/clear_refs restarts the peak at each stage).

Each mode runs in a fresh process of its own, which does what `copick-soup pick` does, one stage at a time:
imports; reads the soup (members checked, networks loaded only when a run uses them); takes the run's inputs (the
members that run, loaded and converted to OpenVINO); compiles each for the run's window shape (one call each);
streams the run's slabs with no network (zero heatmaps, the peak search fed: the slabs, their read-ahead and the
accumulators alone); then `pick_run` itself (the networks, peaks, picks written). Modes:
  turns  `pick` as it is: each OpenVINO member frees its working memory (a window's activations) after its call
         when several members run, so that they take turns holding one (windows.release)
  each   every member keeps its own working memory from call to call (what `pick` did before)

    python benchmarks/pick_memory.py                       # 128x256x256, both modes: results/pick-memory.md
    python benchmarks/pick_memory.py --shape 184,630,630 --out pick-memory-full.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory import process_peak_gb, reset_peak, status_gb  # benchmarks/memory.py
from table import cpu, markdown, publish  # benchmarks/table.py

RESULTS = Path(__file__).parent / "results" / "pick-memory.md"
MODES = {"turns": "members take turns (pick)", "each": "each member keeps its own"}


class Stages:
    """Rows of (stage, RSS after it, peak during it), in GB, each peak since the previous row."""

    def __init__(self):
        self.rows = []
        reset_peak()

    def mark(self, stage: str) -> None:
        self.rows.append((stage, status_gb("VmRSS"), status_gb("VmHWM")))
        print(f"{stage}: RSS {self.rows[-1][1]:.3f} GB, peak {self.rows[-1][2]:.3f} GB", file=sys.stderr, flush=True)
        reset_peak()


def child(mode: str, config: str) -> dict:
    """The stages of picking the project's first run in this process; {rows, peak, window, seconds}."""
    stages = Stages()
    stages.mark("interpreter started")
    import copick_soup  # noqa: F401  (first, as in `copick-soup pick`: its huge-page setting must precede torch)

    # isort: split
    import numpy as np
    import torch

    from copick_soup.data import open_project
    from copick_soup.ensemble import Ensemble, InferenceSettings, windows
    from copick_soup.pick import CANDIDATE_FLOOR, PickOptions, pick_run

    if mode == "each":
        windows.release = lambda predict_batch: None
    stages.mark("libraries imported (torch, OpenVINO, copick, zarr, scipy, the pipeline)")
    ensemble = Ensemble.load("default", "cpu")
    stages.mark(f"soup read ({len(ensemble.members)} members checked, none loaded)")
    run = open_project(config).runs[0]
    settings = InferenceSettings(device="cpu").resolved()
    sources = ensemble.inputs(run, settings, echo=lambda line: None)
    loaded = sum(m.loaded for m in ensemble.members)
    stages.mark(f"{loaded} networks loaded and converted to OpenVINO (the members the run uses)")
    shape = tuple(sources[0].volume.shape)
    tiling = ensemble.tiling(shape, settings)
    for source in sources:  # compiled for the run's window shape; the working memory allocated by the call
        source.predict_batch(torch.zeros((settings.batch, 1, *tiling.window)))
        if len(sources) > 1:
            windows.release(source.predict_batch)
    stages.mark(f"compiled for {'x'.join(map(str, tiling.window))} windows, one call each: plans (after), "
                "working memory (peak)")
    zero = [windows.Source(lambda b: torch.zeros((b.shape[0], len(ensemble.classes), *b.shape[2:])), s.volume,
                           s.weight, s.stats) for s in sources]
    peaks = ensemble.peak_stream(shape, settings, {c.name: CANDIDATE_FLOOR for c in ensemble.classes})
    for chunk in ensemble.stream(zero, settings, tiling=tiling):
        peaks.add(*chunk)
    del zero, peaks
    stages.mark("slabs, read-ahead, accumulators and peak search, with no network")
    start = time.perf_counter()
    pick_run(run, ensemble, settings, PickOptions(overwrite=True), echo=lambda line: None)
    seconds = time.perf_counter() - start
    stages.mark("pick_run: the run through the networks, peaks, picks written")
    peak = max(max(r[2] for r in stages.rows), process_peak_gb())
    return dict(rows=stages.rows, peak=peak, window=tiling.describe(shape), seconds=seconds,
                precision=str(settings.amp_dtype), members=len(sources), voxels=float(np.prod(shape)))


def in_subprocess(mode: str, config: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--config", str(config)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def project(shape, folder: Path) -> Path:
    """A simulated one-run project of this shape with every tomogram type the default soup reads."""
    from copick_soup.simulate import simulate_project

    config = folder / "x".join(map(str, shape)) / "copick.json"
    if not config.exists():
        simulate_project(config.parent, runs=1, shape=shape)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="128,256,256", help="Z,Y,X of the simulated run")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--out", default=None, help="results file name (default pick-memory.md)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "copick-soup-bench-memory"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.config)))
        return
    shape = tuple(int(v) for v in args.shape.split(","))
    config = project(shape, Path(args.data))
    results = {mode: in_subprocess(mode, config) for mode in args.modes}
    publish(RESULTS.with_name(args.out or RESULTS.name), table(shape, results))


def table(shape, results: dict) -> list[str]:
    first = next(iter(results.values()))
    stages = [row[0] for row in first["rows"]]
    columns = ["stage"] + [f"{MODES[m]}: {what}" for m in results for what in ("RSS after, GB", "peak during, GB")]
    rows = []
    for i, stage in enumerate(stages):
        cells = [f"{r['rows'][i][1]:.2f} | {r['rows'][i][2]:.2f}" for r in results.values()]
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    peaks = [f"- | **{r['peak']:.2f}**" for r in results.values()]
    rows.append("| **whole process, peak (VmHWM)** | " + " | ".join(peaks) + " |")
    rows.append("| pick_run seconds (noisy: a shared CPU) | " + " | ".join(f"{r['seconds']:.0f} | -"
                                                                           for r in results.values()) + " |")
    return [
        f"Memory of one `pick` process, stage by stage, default soup on a simulated {'x'.join(map(str, shape))} run "
        f"({cpu()}; {time.strftime('%Y-%m-%d')})",
        f"{first['members']} members run ({first['precision']}, OpenVINO), {first['window']}.",
        "RSS after: the process's resident memory (VmRSS) when the stage is over; peak during: its highest (VmHWM, "
        "restarted at each stage). Whole process: interpreter, libraries, networks and all, as the OOM killer and "
        "a Ray node's memory monitor count it. Each mode in a fresh process of its own.",
        "",
        *markdown(columns, rows),
    ]


if __name__ == "__main__":
    main()
