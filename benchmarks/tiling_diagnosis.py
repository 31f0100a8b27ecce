"""Why the crop tiling (`--window auto`) scores below 64³ cubes (#23): the same runs under several tilings, scored
at the soup's thresholds and at the best thresholds for these runs ("oracle": a diagnosis, not a result).

    python benchmarks/tiling_diagnosis.py [openvino|torch] [variant,variant,...]

Needs the runs benchmarks/norms.py simulates (3 runs of 184x256x256, seed 777); heatmaps cached in /tmp/exp/heat.
Prints one line per tiling (first run, 2026-12-03, default soup, OpenVINO, TTA 1):
gauss64 0.830 (oracle 0.862); crop64m8 0.822 (0.856); auto 72x136x136 crop 0.755 (0.810);
the auto shape Gaussian-blended 0.770 (0.829); crop 96³ margin 16 0.791 (0.834).
"""
import sys
import time
from pathlib import Path

import numpy as np

from copick_soup.data import open_project
from copick_soup.data.picks import read_picks
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.ensemble import blend
from copick_soup.ensemble.thresholds import FLOOR, best_thresholds, threshold_counts
from copick_soup.ensemble.tiling import Tiling
from copick_soup.ensemble.windows import predict_volume
from copick_soup.metric.czii import score_picks

config = Path("/tmp/copick-soup-bench-fixed-norms/777-3-184x256x256/copick.json")
root, soup = open_project(config), Ensemble.load("default")
settings = InferenceSettings(window=64, runtime=sys.argv[1] if len(sys.argv) > 1 else "openvino").resolved()
members = [m for m in soup.members if m.weight > 0]
auto = soup.tiling((184, 256, 256), InferenceSettings(window=None, runtime="torch"))
print("auto:", auto)
V = {
    "gauss64": Tiling.cube(64),
    "crop64m8": Tiling((64, 64, 64), "crop", margin=8),
    "auto": auto,
    "gauss-auto-shape": Tiling(auto.window, "gaussian", 0.25),
    "crop96m16": Tiling((96, 96, 96), "crop", margin=16),
}
only = sys.argv[2].split(",") if len(sys.argv) > 2 else list(V)
cache = Path("/tmp/exp/heat")
cache.mkdir(parents=True, exist_ok=True)
truths = []
for run in root.runs:
    truths.append(read_picks(run, soup.class_names, "curation", "0"))
for name in only:
    t0 = time.perf_counter()
    pairs, cnt = [], 0
    for i, run in enumerate(root.runs):
        f = cache / f"{name}-{i}.npy"
        if f.exists():
            heat = np.load(f)
        else:
            hs = []
            for m in members:
                vol = soup.volume(run, m, settings, echo=lambda _: None)
                src = soup.source(m, vol, settings)
                hs.append(predict_volume(src.predict_batch, vol, len(soup.classes), V[name], settings.batch_size,
                                         src.stats))
            heat = blend(hs, [m.weight for m in members]).astype(np.float16)
            np.save(f, heat)
        picks = soup.picks(heat.astype(np.float32))
        pairs.append((truths[i], {n: p for n, (p, _) in picks.items()}))
        low = soup.picks(heat.astype(np.float32), thresholds={c.name: FLOOR for c in soup.classes})
        cnt = cnt + threshold_counts(low, truths[i], soup.classes)
    s = score_picks(pairs, soup.classes)
    th, o = best_thresholds(cnt, soup.classes)
    def f4(score):
        return f"{score.weighted:.3f} [{' '.join(f'{c.fbeta():.3f}' for c in score.classes)}]"

    print(f"{name:18s} soup thresholds {f4(s)}  oracle {f4(o)} at {th} {time.perf_counter() - t0:.0f}s", flush=True)
