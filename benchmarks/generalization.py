"""Leave-one-engine-out: the default recipe's member trained without an engine, scored on that engine's runs.

Every user's tomogram is foreign to every simulator, so a score on runs made by the code that trained the model is a
sanity check, not a result (issue 46). Each engine (`blobs`, `tilt`, `sart`: docs/simulators.md) makes its own
training, validation and held-out runs, from seeds no recipe uses. For each engine E, one `unet3d_tiny` member is
trained with the default recipe's settings (configs/recipes/cpu-default.yaml: patch, augmentation, normalisation,
EMA, hard negatives) on the *other* engines' training runs, its checkpoint and per-class thresholds chosen on their
validation runs, and it picks E's held-out runs. The shipped default soup picks every engine's held-out runs too:
`sart` is the engine it never saw, the others are sanity checks. The headline is the worst held-out engine.
`--members` scores each of the soup's members alone too, at its thresholds from the soup's search (soup.json keeps
them): which of them travel to the engine none of them saw.

Each pick keeps its candidate peaks (every local maximum above 0.05, with its score), so the ways of deciding picks
from the same heatmaps are compared on the same runs without another network pass (issue 46's habits):
`thresholds` (the model's own per-class thresholds, as `pick` cuts today), `one class` (one particle, one class:
of picks closer than the smaller radius, the one furthest above its class's threshold; ensemble/overlap.py),
`valley` (each class's threshold from the valley of its own score distribution over the held-out runs, no labels;
ensemble/calibrate.py; `threshold --calibrate valley-pooled`), `valley per run` (the same from each run alone;
`pick --calibrate valley`), `valley + one class`, and `best thresholds (labels)`: each class's threshold chosen on
the held-out runs' own truth, the most any threshold calibration could reach, which tells a model whose scores moved
(thresholds off) from one that ranks the engine's particles below its clutter (recognition lost).

    python benchmarks/generalization.py [--steps 1000] [--shape 96,256,256] [--test-runs 8] [--soup default]
    python benchmarks/generalization.py --set aug_scale=0.2 --label wider-scale
    python benchmarks/generalization.py --init unet3d_tiny-denoised --only trained --set aug_spectrum=1.5 \
        --label init-spectrum    # the shipped member trained 500 steps more with a setting, scored on sart

Prints a table and writes benchmarks/results/generalization.md (generalization-LABEL.md with --label: training
settings given with --set are tried on the same runs), with the confusion of each held-out row below it: what each
class's held-out particles were picked as, so a model that names particles wrong is told from one that misses them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import yaml
from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.data.picks import existing_picks, read_picks
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.calibrate import calibrate
from copick_soup.ensemble.overlap import cut_picks
from copick_soup.ensemble.thresholds import best_thresholds, threshold_counts
from copick_soup.metric.czii import confusion, score_picks
from copick_soup.model.checkpoint import check_member
from copick_soup.model.manifest import SoupManifest, member_paths
from copick_soup.objects import VOXEL_SIZE, classes_from_root
from copick_soup.pick import PickOptions, candidates_user, pick_runs
from copick_soup.simulate import ENGINES, MIXED_ENGINES, simulate_project
from copick_soup.train.config import TrainConfig, override, parse_overrides
from copick_soup.train.dataset import load_volumes
from copick_soup.train.loop import train_member
from copick_soup.train.recipe import lab_config

RESULTS = Path(__file__).parent / "results" / "generalization.md"
RECIPE = Path(__file__).parents[1] / "configs" / "recipes" / "cpu-default.yaml"
SEEDS = dict(train=7100, val=7200, test=7300)  # no recipe, test or other benchmark uses these
TOMO_TYPE = "denoised"
USER = "generalization"
FINETUNE = dict(train_layers="all", lr=5e-4, warmup=20, p_hard=0.3)  # --init: a shipped member trained further
DECISIONS = ("thresholds", "one class", "valley", "valley per run", "valley + one class", "best thresholds (labels)")


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


def recipe_config(steps: int, settings: dict) -> TrainConfig:
    """The default recipe's training settings for a member trained from scratch, at `steps`."""
    recipe = yaml.safe_load(RECIPE.read_text())
    base = {**recipe["train"], **recipe["pretrain"]["train"], "p_hard": 0.3}
    base = {k: v for k, v in base.items() if k not in ("steps", "val_every")}
    cfg = TrainConfig(variant="unet3d_tiny", steps=steps, val_every=max(steps // 6, 1),
                      hard_every=max(steps // 3, 1), **base)
    return override(cfg, settings)


def train_on(engines: tuple, made: dict, out: Path, steps: int, settings: dict, label: str, init=None) -> Path:
    """A member trained on these engines' training runs, validated on their validation runs: a unet3d_tiny from
    scratch with the default recipe's settings, or `init` (a soup member's manifest) fine-tuned (FINETUNE)."""
    best = out / "members" / label / ((f"{init.stem}-" if init else "") + "+".join(engines)) / "best.json"
    if best.exists():
        return best
    manifest = check_member(init) if init else None
    cfg = (recipe_config(steps, settings) if init is None else
           lab_config(manifest, {**FINETUNE, "steps": steps, "hard_every": max(steps // 2, 1),
                                 "val_every": max(steps // 4, 1), **settings}))
    tomo_type = manifest.tomo_type if manifest else TOMO_TYPE
    volumes = {}
    for split in ("train", "val"):
        volumes[split] = []
        for engine in engines:
            root = open_project(made[engine, split])
            classes = classes_from_root(root)
            volumes[split] += load_volumes(root, root.runs, [tomo_type], classes, VOXEL_SIZE, "curation", "0",
                                           normalisation=cfg.normalisation)
    return train_member(cfg, classes, volumes["train"], volumes["val"], best.parent, VOXEL_SIZE, tomo_type,
                        init=init, provenance=dict(benchmark="generalization", engines=list(engines)), echo=print)


def model_path(row: str, soup: str, train) -> str:
    """What a table row picks with: the soup, one of its members (row "'NAME' alone"), or a member `train()`s."""
    if row.startswith("soup"):
        return soup
    if row.endswith("alone"):
        return str(next(m for m in member_paths(soup) if f"'{m.stem}'" in row))
    return str(train())


def searched_thresholds(soup: str, fallback: dict, row: str) -> dict:
    """A member's own thresholds as the soup's search chose them on the soup's validation runs (a soup.json keeps
    them per member), else `fallback` (its manifest's, from the two validation runs of its training)."""
    members = SoupManifest.read(soup).validation.get("members", {})
    return next((m["thresholds"] for name, m in members.items() if f"'{name}'" in row), fallback)


def pick_candidates(soup: str, session: str, config: Path, settings: InferenceSettings, reuse: bool = False):
    """(ensemble, classes, [(run name, truth, candidates)], seconds): the model picks the held-out runs once and
    every decision is made from the candidate peaks it kept (with `reuse`, those of an earlier pick, and the seconds
    it took, kept beside the project in seconds.json)."""
    root = open_project(config)
    ensemble = Ensemble.load(soup, settings.device)
    timings = config.parent / "seconds.json"
    seconds = json.loads(timings.read_text()) if timings.exists() else {}
    if not (reuse and existing_picks(root.runs[0], ensemble.class_names, candidates_user(USER), session)):
        start = time.perf_counter()
        pick_runs(root, ensemble, None, settings, PickOptions(user_id=USER, session_id=session, overwrite=True),
                  echo=lambda m: None)
        seconds[session] = time.perf_counter() - start
        timings.write_text(json.dumps(seconds, indent=1))
    classes = classes_from_root(root)
    names = [c.name for c in classes]
    runs = [(run.name, read_picks(run, names, "curation", "0"),
             read_picks(run, names, candidates_user(USER), session, with_scores=True)) for run in root.runs]
    return ensemble, classes, runs, seconds.get(session, float("nan"))


def decide(decision: str, ensemble, classes, runs) -> list:
    """[(truth, picks)] per run, the picks made from the candidates as `decision` says (DECISIONS)."""
    pooled = {c.name: (None, [s for _, _, cand in runs for s in cand[c.name][1]]) for c in classes}
    thresholds = calibrate(pooled, ensemble.thresholds)[0] if decision.startswith("valley") else ensemble.thresholds
    if decision.startswith("best thresholds"):  # an upper bound: the held-out truth chooses
        thresholds = best_thresholds(sum(threshold_counts(cand, truth, classes) for _, truth, cand in runs), classes)[0]
    pairs = []
    for _, truth, candidates in runs:
        if decision.startswith("valley per run"):
            thresholds = calibrate(candidates, ensemble.thresholds)[0]
        picks = cut_picks(candidates, classes, thresholds, ensemble.overlap, one="one class" in decision)
        pairs.append((truth, {n: positions for n, (positions, _) in picks.items()}))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps per member")
    parser.add_argument("--shape", default="96,256,256", help="Z,Y,X of every simulated run")
    parser.add_argument("--train-runs", type=int, default=6, help="per engine")
    parser.add_argument("--val-runs", type=int, default=2, help="per engine")
    parser.add_argument("--test-runs", type=int, default=8, help="held-out runs per engine (8: 100-120 particles)")
    parser.add_argument("--soup", default="default", help="a soup scored on every engine's held-out runs too")
    parser.add_argument("--soup-engines", default="+".join(MIXED_ENGINES),
                        help="the engines that made the soup's training data, joined by + (the default soup's)")
    parser.add_argument("--in-engine", action="store_true",
                        help="also a member trained on all engines, scored on each (the sanity check)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for every member (see TrainConfig), e.g. aug_scale=0.2")
    parser.add_argument("--label", default="", help="names the members and the table of a --set experiment")
    parser.add_argument("--members", action="store_true",
                        help="also each of the soup's members alone, scored on each engine (which one travels)")
    parser.add_argument("--init", default=None, metavar="MEMBER",
                        help="instead of members from scratch, this member of --soup trained further (all layers, "
                             "lr 5e-4) on the other engines, for each engine the soup never saw: a stronger proxy")
    parser.add_argument("--init-steps", type=int, default=500, help="training steps with --init")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="score only the models whose row name holds TEXT (e.g. 'soup')")
    parser.add_argument("--reuse-picks", action="store_true",
                        help="decide from the candidates an earlier run kept, without picking again (no seconds)")
    parser.add_argument("--out", default="/tmp/copick-soup-bench-generalization")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    out = Path(args.out) / f"{'x'.join(map(str, shape))}-{args.steps}"
    made = projects(out, shape, dict(train=args.train_runs, val=args.val_runs, test=args.test_runs))
    settings = parse_overrides(args.settings)
    label = args.label or ("base" if not settings else "-".join(f"{k}{v}" for k, v in settings.items()))

    # (row name, scored on, trained on): every member trained without the engine it picks, then the soup everywhere
    soup_engines = tuple(args.soup_engines.split("+"))
    plan = [(f"member without {e}", e, tuple(x for x in ENGINES if x != e)) for e in ENGINES]
    init = None
    if args.init:  # a shipped member trained further without E: only for the engines it never saw
        init = next((m for m in member_paths(args.soup) if m.stem == args.init), None)
        if init is None:
            raise SystemExit(f"--init {args.init}: not a member of soup '{args.soup}'")
        plan = [(f"'{args.init}' trained further without {e}", x, trained_on) for _, e, trained_on in plan
                if e not in soup_engines for x in ENGINES]  # held out, and its training engines
    plan += [(f"soup '{args.soup}'", e, soup_engines) for e in ENGINES]
    if args.in_engine:
        plan += [("member on all", e, ENGINES) for e in ENGINES]
    if args.members:  # each of the soup's members alone, at its thresholds from the soup's search
        plan += [(f"'{m.stem}' alone", e, soup_engines) for m in member_paths(args.soup)
                 for e in ENGINES]
    plan = [p for p in plan if args.only is None or args.only in p[0]]
    inference = InferenceSettings()  # pick's defaults: its tiling, TTA 1, amp auto, on the CPU

    rows, names, truth, confusions, worst = [], None, {}, [], {}
    for name, engine, trained_on in plan:
        model = model_path(name, args.soup, partial(train_on, trained_on, made, out, args.init_steps if init else
                                                    args.steps, settings, label, init))
        session = f"{label}-{name}-{engine}".replace(" ", "_").replace("'", "")
        ensemble, classes, runs, seconds = pick_candidates(model, session, made[engine, "test"], inference,
                                                                 args.reuse_picks)
        if name.endswith("alone"):  # the member's thresholds from the soup's search, on the soup's validation runs
            ensemble = replace(ensemble, thresholds=searched_thresholds(args.soup, ensemble.thresholds, name))
        kind = "in-engine" if engine in trained_on else "held out"
        for decision in DECISIONS:
            pairs = decide(decision, ensemble, classes, runs)
            score = score_picks(pairs, classes)
            names = [c.name for c in score.classes]
            truth[engine] = sum(c.tp + c.fn for c in score.classes)
            rows.append(f"| {name} | {engine} ({kind}) | {decision} | {score.weighted:.3f} | "
                        + " | ".join(f"{c.fbeta():.3f}" for c in score.classes) + f" | {seconds:.0f} |")
            print(rows[-1], flush=True)
            group = "members, each without the engine it picks" if name.startswith("member without") else name
            if kind == "held out" and score.weighted < worst.get((group, decision), (2.0, ""))[0]:
                worst[group, decision] = (score.weighted, engine)
            if kind == "held out" and decision in ("thresholds", "valley + one class"):
                confusions += ["", f"{name}, scored on {engine}, {decision}:", "", "```",
                               confusion(pairs, classes).table(), "```"]
    headline = [f"- {name}, {decision}: worst held-out engine {engine}, weighted F4 {value:.3f}"
                for (name, decision), (value, engine) in worst.items()]
    publish(RESULTS.with_name(f"generalization{'-' + args.label if args.label else ''}.md"), [
        "Leave-one-engine-out: "
        + (f"the soup's {args.init} trained further ({args.init_steps} steps, all layers, lr 5e-4" if init else
           f"unet3d_tiny members trained ({args.steps} steps, the default recipe's settings, {TOMO_TYPE}")
        + (f", {', '.join(args.settings)}" if settings else "") + f") on the other engines' "
        f"{args.train_runs} runs each, checkpoints and thresholds from their {args.val_runs} validation runs each, "
        f"scored on {args.test_runs} held-out runs of {'x'.join(map(str, shape))} voxels per engine ("
        + ", ".join(f"{e}: {truth[e]} particles" for e in truth) + f"); TTA 1, amp auto; "
        f"{cpu()}, {time.strftime('%Y-%m-%d')}",
        "",
        *headline,
        "",
        *markdown(["model", "scored on", "decision", "weighted F4", *names, "seconds"], rows),
        "",
        "Decisions, all from the same candidate peaks: `thresholds`, the model's own (as `pick` cuts); `one class`, "
        "of picks closer than the smaller radius the one furthest above its class's threshold; `valley`, each "
        "class's threshold from the valley of its score distribution over the engine's held-out runs (no labels; "
        "the model's own where no valley); `valley per run`, from each run alone; `best thresholds (labels)`, each "
        "class's threshold chosen on the held-out truth itself: not a method, the bound on any threshold calibration.",
        "",
        "What each class's held-out particles were picked as (a pick of that class within half the particle's "
        "radius; `copick-soup score --confusion`): off the diagonal, particles named wrong; `nothing`, missed; the "
        "last row, picks on no particle.",
        *confusions,
    ])


if __name__ == "__main__":
    main()
