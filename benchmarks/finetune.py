"""A lab's path: `copick-soup finetune` on three annotated runs and one validation run of a phantom engine, with
the default soup before and after, scored on held-out runs of that engine, and where the time went.

    python benchmarks/finetune.py [--engine sart] [--shape 128,256,256] [--crowding 2] [--held-out 4] [--steps N]
                                  [--layers all decoder head] [--set KEY=VALUE ...] [--members NAME ...]
                                  [--out /tmp/copick-soup-bench-finetune] [--results finetune.md]
    python benchmarks/finetune.py --shape 64,128,128 --crowding 6 --held-out 2 --steps 30 --layers all decoder head \
        --results finetune-layers.md     # which layers a few-run fine-tune trains (15 min)

Three tables, written to benchmarks/results/finetune.md (or --results):
- held-out F4: the default soup; its members with weights and thresholds searched on the validation run (what the
  search alone does); the soup `copick-soup finetune` writes (what fine-tuning adds), one row per --layers choice;
- the time of each phase of that command: planned (from the rates it measured before any work) and taken, per choice;
- one pass of each member's network over the training runs, as mining and validation ran it before (torch, 64³
  cubes) and as they run it now (as `pick` does: OpenVINO on a CPU with its conversion, the crop tiling).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import score_project
from copick_soup.finetune import PHASES, finetune_soup
from copick_soup.model.checkpoint import load_member
from copick_soup.model.manifest import MemberManifest, member_paths
from copick_soup.objects import classes_from_root
from copick_soup.pick import PickOptions, pick_runs
from copick_soup.simulate import simulate_project
from copick_soup.soup.build import build_soup
from copick_soup.train.config import parse_overrides
from copick_soup.train.dataset import load_volumes
from copick_soup.train.recipe import lab_config

RESULTS = Path(__file__).parent / "results"
TRAIN, VAL = ["exp_000", "exp_001", "exp_002"], ["exp_003"]


def score_soup(config, soup, held_out, session: str):
    root = open_project(config)
    opts = PickOptions(user_id="bench", session_id=session, overwrite=True)
    pick_runs(root, Ensemble.load(soup), held_out, InferenceSettings(), opts, echo=lambda m: None)
    return score_project(root, "curation", "bench", "0", session, run_names=held_out)


def one_pass(config, members) -> list[str]:
    """Rows: each member's network over the training runs, before (torch, 64³ cubes) and now (pick's way)."""
    root = open_project(config)
    classes = classes_from_root(root)
    rows = []
    for path in members:
        manifest = MemberManifest.read(path)
        cfg = lab_config(manifest)
        volumes = load_volumes(root, [root.get_run(n) for n in TRAIN], [manifest.tomo_type], classes,
                               manifest.voxel_size, "curation", "0", warn=lambda m: None,
                               normalisation=cfg.normalisation)
        if not volumes:
            continue
        model, _ = load_member(path)
        seconds = []
        for settings in (InferenceSettings(window=64, runtime="torch", amp=cfg.amp),
                         InferenceSettings(window=cfg.val_window or None, amp=cfg.amp)):
            ensemble = Ensemble.of_model(model, classes, manifest.voxel_size)  # a fresh one: converted anew
            started = time.perf_counter()
            for v in volumes:
                ensemble.heatmap(v.image, settings, stats=(0.0, 1.0))
            seconds.append(time.perf_counter() - started)
        rows.append(f"| {manifest.name} | {len(volumes)} | {seconds[0]:.1f} | {seconds[1]:.1f} | "
                    f"{seconds[0] / seconds[1]:.1f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="sart", help="the phantom engine of the lab's runs")
    parser.add_argument("--init", default="fast", help="the soup fine-tuned (as `finetune --init`; its default)")
    parser.add_argument("--shape", default="128,256,256")
    parser.add_argument("--held-out", type=int, default=4, help="held-out runs to score on")
    parser.add_argument("--crowding", type=float, default=2.0,
                        help="particles x the natural count (small runs need more, so that every run has some)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per member (default: the lab's)")
    parser.add_argument("--layers", nargs="+", default=[None], choices=["all", "decoder", "head"],
                        help="train_layers to compare, one fine-tune each (default: the lab's)")
    parser.add_argument("--set", dest="settings", nargs="*", default=[], metavar="KEY=VALUE",
                        help="fine-tuning settings over the lab's, as `finetune --set` (e.g. lr=1e-4)")
    parser.add_argument("--members", nargs="+", default=(), metavar="NAME",
                        help="fine-tune only these members of the default soup, as `finetune --members`")
    parser.add_argument("--out", default="/tmp/copick-soup-bench-finetune")
    parser.add_argument("--results", default="finetune.md")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    out = Path(args.out) / f"{args.engine}-{'x'.join(map(str, shape))}-crowding{args.crowding:g}"
    config = out / "lab" / "copick.json"
    runs = len(TRAIN) + len(VAL) + args.held_out
    if not config.exists():
        simulate_project(config.parent, runs=runs, shape=shape, profile="experimental", seed=31, engine=args.engine,
                         crowding=args.crowding)
    held_out = [f"exp_{i:03d}" for i in range(len(TRAIN) + len(VAL), runs)]

    before = score_soup(config, args.init, held_out, "before")
    searched = build_soup(config, [str(p) for p in member_paths(args.init)], VAL, out / f"soup-searched-{args.init}",
                          echo=lambda m: None)
    scores = [(f"`{args.init}` soup", before),
              (f"`{args.init}` members, weights and thresholds searched on {len(VAL)} lab run",
               score_soup(config, searched, held_out, "searched"))]
    records = []
    for layers in args.layers:
        overrides = {**parse_overrides(args.settings), **({"train_layers": layers} if layers else {})}
        soup_dir = out / f"soup-{args.init}-{layers or 'lab'}"
        shutil.rmtree(soup_dir, ignore_errors=True)  # an earlier run's: finetune writes into a new folder only
        soup = finetune_soup(config, args.init, soup_dir, TRAIN, VAL, steps=args.steps, members=args.members,
                             overrides=overrides, echo=lambda m: None)
        record = json.loads((soup_dir / "finetune.json").read_text())
        member = json.loads(next((soup_dir / "members").glob("*.json")).read_text())["training"]["config"]
        label = (f"`copick-soup finetune --init {args.init}`: {member['steps']} steps per member, "
                 f"train_layers {member['train_layers']}, "
                 f"lr {member['lr']:g}" + (f", only {', '.join(args.members)}" if args.members else ""))
        scores.append((label, score_soup(config, soup, held_out, f"after-{layers or 'lab'}")))
        records.append((member["train_layers"], record))

    names = [c.name for c in before.classes]
    rows = [f"| {label} | {s.weighted:.3f} | " + " | ".join(f"{c.fbeta():.3f}" for c in s.classes) + " |"
            for label, s in scores]
    phases = [f"| {p} | " + " | ".join(f"{r['planned_s'][p]:.0f} | {r['spent_s'][p]:.0f}" for _, r in records) + " |"
              for p in PHASES]
    phases.append("| total | " + " | ".join(f"{sum(r['planned_s'].values()):.0f} | {sum(r['spent_s'].values()):.0f}"
                                          for _, r in records) + " |")
    members = ", ".join(f"{name} ({steps} steps)" for name, steps in records[0][1]["steps"].items())
    publish(RESULTS / args.results, [
        f"Fine-tuning benchmark: the `{args.init}` soup fine-tuned with `copick-soup finetune` on {len(TRAIN)} "
        f"annotated runs and searched on {len(VAL)}, all of {'x'.join(map(str, shape))} voxels from the "
        f"`{args.engine}` engine (experimental profile, crowding {args.crowding:g}), scored on {args.held_out} "
        f"held-out runs of it; {cpu()}, {time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["soup", "held-out F4", *names], rows),
        "",
        f"Where the time went (seconds, wall): {members}; left out: "
        f"{'; '.join(records[0][1]['left_out']) or 'none'}. Planned: from a few training steps, one inference window "
        f"and one peak search per member, measured before any work; the tomograms were read in "
        f"{records[0][1]['read_s']:.0f} s before the plan. A busy machine (other jobs on its cores) makes both "
        f"columns longer, and the plan only as much as it was busy while measuring.",
        "",
        *markdown(["phase", *[f"{side} ({layers})" for layers, _ in records for side in ("planned", "took")]],
                  phases),
        "",
        f"One pass of each member's network over the {len(TRAIN)} training runs (a mining; a validation is the same "
        f"on the validation runs), seconds, wall: as training ran it before (torch, 64³ cubes, Gaussian-blended) "
        f"and as it runs it now, as `pick` does (OpenVINO with its conversion of the network, the crop tiling for "
        f"fixed-norm members).",
        "",
        *markdown(["member", "volumes", "torch, 64³ cubes", "as pick runs it", "speed-up"],
                  one_pass(config, member_paths(args.init))),
    ])


if __name__ == "__main__":
    main()
