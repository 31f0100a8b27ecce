"""Experiment (removed after measuring it, docs/decisions.md): distil the default soup into its tiny denoised
member, on blobs+tilt runs (sart stays held out).

    python benchmarks/distil_soup.py 1000 /tmp/s7/student-1000
"""
import json
import sys
import time
from pathlib import Path

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble
from copick_soup.model.manifest import member_paths
from copick_soup.train.dataset import load_volumes
from copick_soup.train.distil import distil, student_config, teacher_volumes

DATA = Path("/tmp/copick-soup-bench-generalization/96x256x256-1000/data")
steps, out = int(sys.argv[1]), Path(sys.argv[2])
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
soup = Ensemble.load("default")
student = next(p for p in member_paths("default") if p.stem == "unet3d_tiny-denoised")
cfg = student_config(student, steps, extra)
print(cfg)
t = time.perf_counter()
train, val = [], []
for engine in ("blobs", "tilt"):
    root = open_project(DATA / f"{engine}-train" / "copick.json")
    train += teacher_volumes(soup, root.runs, "denoised", cfg.normalisation)
    vroot = open_project(DATA / f"{engine}-val" / "copick.json")
    val += load_volumes(vroot, vroot.runs, ["denoised"], soup.classes, soup.voxel_size, "curation", "0",
                        normalisation=cfg.normalisation)
print(f"teacher: {len(train)} volumes in {time.perf_counter() - t:.0f} s", flush=True)
t = time.perf_counter()
best = distil(soup, student, train, val, out, cfg)
print(f"student: {best} in {time.perf_counter() - t:.0f} s")
