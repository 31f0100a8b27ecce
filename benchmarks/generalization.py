"""Cross-engine generalisation: a member trained on one phantom engine, scored on held-out runs of the other.

Every user's tomogram is foreign to every simulator, so a score on runs made by the code that trained the model
says little. Here each engine (`blobs`: Gaussian-blob particles imaged in Fourier space; `tilt`: densities from
atomic models, a real-space tilt series and weighted back-projection) makes its own training, validation and
held-out runs, from seeds no recipe uses. One `unet3d_tiny` member per engine is trained on that engine's training
runs; its checkpoint and per-class thresholds are chosen on that engine's validation runs, as the soup search
would. Each member, and the shipped default soup, then picks the held-out runs of *both* engines: the diagonal is
the in-engine sanity check, the off-diagonal the result. Held-out runs are never trained on or searched on.

    python benchmarks/generalization.py [--steps 1000] [--shape 96,256,256] [--test-runs 8] [--soup default]
    python benchmarks/generalization.py --set aug_scale=0.1 --set normalisation=robust --label randomised

Prints a table and writes benchmarks/results/generalization.md (generalization-LABEL.md with --label: training
settings given with --set are tried on the same runs, and the rows show whether they close the gap), with each
row's confusion below it: what each class's held-out particles were picked as, so a model that names particles
wrong is told from one that misses them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import project_pairs
from copick_soup.metric.czii import confusion, score_picks
from copick_soup.objects import VOXEL_SIZE, classes_from_root
from copick_soup.pick import PickOptions, pick_runs
from copick_soup.simulate import MIXED, MIXED_ENGINES, simulate_project
from copick_soup.train.config import TrainConfig, override, parse_overrides
from copick_soup.train.dataset import load_volumes
from copick_soup.train.loop import train_member

ENGINES = MIXED_ENGINES  # blobs and tilt, the default soup's; the held-out `sart` engine is not in this table

RESULTS = Path(__file__).parent / "results" / "generalization.md"
SEEDS = dict(train=7100, val=7200, test=7300)  # no recipe, test or other benchmark uses these
TOMO_TYPE = "denoised"


def projects(out: Path, shape, runs: dict) -> dict:
    """{(engine, split): copick config}, simulated once (reused by a rerun)."""
    made = {}
    for engine in ENGINES:
        for split, n in runs.items():
            folder = f"{engine}-{split}" + (f"-{n}" if split == "test" else "")  # more held-out runs: a new set
            config = out / "data" / folder / "copick.json"
            if not config.exists():
                simulate_project(config.parent, runs=n, shape=shape, seed=SEEDS[split] + ENGINES.index(engine),
                                 profile="experimental", engine=engine, balance=split == "train",
                                 run_prefix=f"{engine}_{split}_")
            made[engine, split] = config
    return made


def train_on(engine: str, made: dict, out: Path, steps: int, settings: dict, label: str) -> Path:
    """A unet3d_tiny member trained on one engine's runs, validated on its validation runs."""
    best = out / "members" / label / engine / "best.json"
    if best.exists():
        return best
    cfg = override(TrainConfig(variant="unet3d_tiny", steps=steps, val_every=max(steps // 6, 1), amp="auto",
                               p_hard=0.3, hard_every=max(steps // 3, 1)), settings)
    train_root, val_root = open_project(made[engine, "train"]), open_project(made[engine, "val"])
    classes = classes_from_root(train_root)
    train, val = (load_volumes(root, root.runs, [TOMO_TYPE], classes, VOXEL_SIZE, "curation", "0",
                               normalisation=cfg.normalisation) for root in (train_root, val_root))
    return train_member(cfg, classes, train, val, best.parent, VOXEL_SIZE, TOMO_TYPE,
                        provenance=dict(benchmark="generalization", engine=engine), echo=print)


def score_on(soup: str, name: str, config: Path, settings: InferenceSettings):
    root = open_project(config)
    ensemble = Ensemble.load(soup, settings.device)
    opts = PickOptions(user_id="generalization", session_id=name, overwrite=True)
    start = time.perf_counter()
    pick_runs(root, ensemble, None, settings, opts, echo=lambda m: None)
    seconds = time.perf_counter() - start
    classes, pairs = project_pairs(root, "curation", "generalization", "0", name)
    return score_picks(pairs, classes), confusion(pairs, classes), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps per member")
    parser.add_argument("--shape", default="96,256,256", help="Z,Y,X of every simulated run")
    parser.add_argument("--train-runs", type=int, default=6)
    parser.add_argument("--val-runs", type=int, default=2)
    parser.add_argument("--test-runs", type=int, default=8, help="held-out runs per engine (8: 108-119 particles)")
    parser.add_argument("--soup", default="default", help="a soup scored on both engines' held-out runs too")
    parser.add_argument("--soup-engine", default=MIXED, choices=[*ENGINES, MIXED],
                        help="the engine that made the soup's training data (the default soup's: both, mixed)")
    parser.add_argument("--before", default=None, metavar="SOUP",
                        help="a soup to compare with, trained on blobs only (the default soup before it saw both)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for both members (see TrainConfig), e.g. aug_scale=0.1")
    parser.add_argument("--label", default="", help="names the members and the table of a --set experiment")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="score only the models whose row name holds TEXT (e.g. 'soup'); with --label")
    parser.add_argument("--out", default="/tmp/copick-soup-bench-generalization")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    out = Path(args.out) / f"{'x'.join(map(str, shape))}-{args.steps}"
    made = projects(out, shape, dict(train=args.train_runs, val=args.val_runs, test=args.test_runs))
    settings = parse_overrides(args.settings)
    label = args.label or ("base" if not settings else "-".join(f"{k}{v}" for k, v in settings.items()))

    def wanted(name: str) -> bool:  # a row --only asks for
        return args.only is None or args.only in name

    models = {f"trained on {engine}": (str(train_on(engine, made, out, args.steps, settings, label)), engine)
              for engine in ENGINES if wanted(f"trained on {engine}")}  # trained only when scored
    models[f"soup '{args.soup}'"] = (args.soup, args.soup_engine)
    if args.before:
        models["soup before (blobs only)"] = (args.before, "blobs")
    inference = InferenceSettings()  # pick's defaults: its tiling, TTA 1, amp auto, on the CPU
    models = {name: model for name, model in models.items() if wanted(name)}

    rows, names, truth, confusions = [], None, {}, []
    for name, (soup, trained_on) in models.items():
        for engine in ENGINES:
            session = f"{label}-{name}-{engine}".replace(" ", "_").replace("'", "")
            score, mixed, seconds = score_on(soup, session, made[engine, "test"], inference)
            confusions += ["", f"{name}, scored on {engine}:", "", "```", mixed.table(), "```"]
            names = [c.name for c in score.classes]
            truth[engine] = sum(c.tp + c.fn for c in score.classes)
            kind = "in-engine" if trained_on in (engine, MIXED) else "cross-engine"
            rows.append(f"| {name} | {engine} ({kind}) | {score.weighted:.3f} | "
                        + " | ".join(f"{c.fbeta():.3f}" for c in score.classes) + f" | {seconds:.0f} |")
            print(rows[-1], flush=True)
    publish(RESULTS.with_name(f"generalization{'-' + args.label if args.label else ''}.md"), [
        f"Cross-engine generalisation: members trained ({args.steps} steps, unet3d_tiny, {TOMO_TYPE}"
        + (f", {', '.join(args.settings)}" if settings else "") + ") on one "
        f"engine's {args.train_runs} runs, thresholds from its {args.val_runs} validation runs, scored on "
        f"{args.test_runs} held-out runs of {'x'.join(map(str, shape))} voxels per engine ("
        + ", ".join(f"{e}: {truth[e]} particles" for e in ENGINES) + f"); TTA 1, amp auto; "
        f"{cpu()}, {time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["model", "scored on", "weighted F4", *names, "seconds"], rows),
        "",
        "What each class's held-out particles were picked as (a pick of that class within half the particle's "
        "radius; `copick-soup score --confusion`): off the diagonal, particles named wrong; `nothing`, missed; the "
        "last row, picks on no particle.",
        *confusions,
    ])


if __name__ == "__main__":
    main()
