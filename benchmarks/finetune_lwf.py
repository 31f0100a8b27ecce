"""Issue 47 experiment (removed after measuring it, docs/decisions.md):
a lab fine-tune of fast's tiny member on 3 sart runs, with and without 'learning without
forgetting' (simulated blobs/tilt runs whose targets are the member's own heatmaps, mixed into the patches)."""
import sys
import time

sys.path.insert(0, "/work/main/benchmarks")
from pathlib import Path

from finetune import score_soup

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble
from copick_soup.model.checkpoint import check_member
from copick_soup.model.manifest import member_paths
from copick_soup.objects import classes_from_root
from copick_soup.soup.build import build_soup
from copick_soup.train.dataset import load_volumes
from copick_soup.train.distil import teacher_volumes
from copick_soup.train.loop import train_member
from copick_soup.train.recipe import lab_config

LAB = Path("/tmp/copick-soup-bench-finetune/sart-128x256x256-crowding2/lab/copick.json")
SIM = Path("/tmp/copick-soup-bench-generalization/96x256x256-1000/data")
TRAIN, VAL, HELD = ["exp_000", "exp_001", "exp_002"], ["exp_003"], [f"exp_{i:03d}" for i in range(4, 8)]
layers, n_sim, steps, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = Path("/tmp/s7/lwf") / label
member = next(p for p in member_paths("fast") if p.stem == "unet3d_tiny-denoised")
manifest = check_member(member)
cfg = lab_config(manifest, dict(train_layers=layers, steps=steps))
root = open_project(LAB)
classes = classes_from_root(root)
t0 = time.perf_counter()
train = load_volumes(root, [root.get_run(n) for n in TRAIN], ["denoised"], classes, manifest.voxel_size,
                     "curation", "0", normalisation=cfg.normalisation)
val = load_volumes(root, [root.get_run(n) for n in VAL], ["denoised"], classes, manifest.voxel_size,
                   "curation", "0", normalisation=cfg.normalisation)
if n_sim:
    teacher = Ensemble.load(str(member))
    for engine in ("blobs", "tilt"):
        sim = open_project(SIM / f"{engine}-train" / "copick.json")
        train += teacher_volumes(teacher, sim.runs[:n_sim // 2], "denoised", cfg.normalisation)
print(f"{len(train)} training volumes in {time.perf_counter() - t0:.0f} s", flush=True)
best = train_member(cfg, classes, train, val, out / "member", manifest.voxel_size, "denoised", init=str(member),
                    echo=print)
soup = build_soup(LAB, [str(best)], VAL, out / "soup", echo=lambda m: None)
score = score_soup(LAB, soup, HELD, label)
line = f"{label}: layers {layers}, sim {n_sim}, steps {steps}: held-out F4 {score.weighted:.3f} " + " ".join(
    f"{c.name[:6]} {c.fbeta():.3f}" for c in score.classes) + f" ({time.perf_counter() - t0:.0f} s)"
print(line)
open("/tmp/s7/lwf.txt", "a").write(line + "\n")
