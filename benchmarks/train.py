"""Does pretraining on simulation help? Pretrain tiny on `simulated`-profile phantoms, fine-tune on two
`experimental`-profile runs, and compare held-out F4 against training from scratch on the same two runs.

Scratch gets the fine-tuning budget (same experimental steps) and, separately, the whole budget (pretrain +
fine-tune steps). Everything runs on this machine's CPU; prints a table and writes benchmarks/results/train.md.

    python benchmarks/train.py [--pretrain-steps 150] [--finetune-steps 100] [--out /tmp/copick-soup-bench]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.model.checkpoint import load_member
from copick_soup.objects import VOXEL_SIZE, classes_from_root
from copick_soup.simulate import simulate_project
from copick_soup.train.config import TrainConfig
from copick_soup.train.dataset import load_volumes
from copick_soup.train.loop import train_member
from copick_soup.train.validation import validate

RESULTS = Path(__file__).parent / "results" / "train.md"
SHAPE = (64, 160, 160)


def project(out: Path, name: str, **kwargs):
    config = out / name / "copick.json"
    if not config.exists():
        simulate_project(config.parent, shape=SHAPE, crowding=3.0, **kwargs)
    return open_project(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--out", default="/tmp/copick-soup-bench-train")
    args = parser.parse_args()
    out = Path(args.out)

    sim = project(out, "simulated", runs=5, profile="simulated", seed=11)
    exp = project(out, "experimental", runs=5, profile="experimental", seed=12)
    classes = classes_from_root(exp)

    def volumes(root, runs):
        return load_volumes(root, runs, ["denoised"], classes, VOXEL_SIZE, "curation", "0")

    sim_train, sim_val = volumes(sim, sim.runs[:4]), volumes(sim, sim.runs[4:])
    exp_train, exp_val, exp_test = volumes(exp, exp.runs[:2]), volumes(exp, exp.runs[2:3]), volumes(exp, exp.runs[3:])
    base = TrainConfig(variant="unet3d_tiny", patch=48, batch_size=2, val_every=50, seed=0)
    pre = TrainConfig(**{**base.as_dict(), "steps": args.pretrain_steps, "lr": 2e-3})
    fine = TrainConfig(**{**base.as_dict(), "steps": args.finetune_steps, "lr": 1e-3, "warmup": 10})
    long = TrainConfig(**{**base.as_dict(), "steps": args.pretrain_steps + args.finetune_steps, "lr": 2e-3})

    rows, timings = [], {}

    def run(label, cfg, train, val, folder, init=None):
        wall, cpu = time.perf_counter(), time.process_time()
        best = train_member(cfg, classes, train, val, out / "runs" / folder, VOXEL_SIZE, "denoised", init=init)
        timings[label] = (time.perf_counter() - wall, time.process_time() - cpu)
        return best

    pretrained = run("pretrain (simulated)", pre, sim_train, sim_val, "pretrain")
    candidates = {
        f"pretrained + fine-tuned ({args.finetune_steps} exp. steps)":
            run("fine-tune", fine, exp_train, exp_val, "finetune", init=pretrained),
        f"scratch, same exp. budget ({args.finetune_steps} steps)":
            run("scratch short", fine, exp_train, exp_val, "scratch-short"),
        f"scratch, whole budget ({args.pretrain_steps + args.finetune_steps} steps)":
            run("scratch long", long, exp_train, exp_val, "scratch-long"),
        "pretrained only (no fine-tuning)": pretrained,
    }
    names = [c.name for c in classes]
    for label, manifest in candidates.items():
        model, meta = load_member(manifest)  # scored at its own validation thresholds: none tuned on the test runs
        score, _ = validate(model, exp_test, classes, base, VOXEL_SIZE, "cpu", meta.thresholds())
        per_class = " | ".join(f"{c.fbeta():.3f}" for c in score.classes)
        rows.append(f"| {label} | {score.weighted:.3f} | {per_class} |")

    publish(RESULTS, [
        f"Pretraining benchmark: unet3d_tiny, denoised, patch 48, {SHAPE} phantoms, held-out = 2 experimental-profile"
        f" runs; {cpu()}, {time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["model", "held-out F4", *names], rows),
        "",
        "Wall / CPU seconds per training job: "
        + ", ".join(f"{k} {w:.0f} / {c:.0f}" for k, (w, c) in timings.items()),
        f"Total wall time {sum(w for w, _ in timings.values()):.0f} s (target: 15 minutes for pretrain + fine-tune "
        f"+ scratch); total CPU time {sum(c for _, c in timings.values()):.0f} s",
    ])


if __name__ == "__main__":
    main()
