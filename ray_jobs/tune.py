"""Training trials fanned out on a Ray cluster, then the soup search: `python -m ray_jobs.tune --recipe R --out D`.

A trial is one fold of one stage of one member: (variant x tomogram type x hyperparameter setting) x folds. Each
runs as a Ray task that pins one GPU (or `--cpus-per-trial` CPUs on a cluster without GPUs) and calls the same
`train_fold` as `copick-soup train`. The driver only schedules, stage by stage: pretraining trials, then each
later stage's folds (fine-tuning, and `fix_norms` where the recipe has it) started from their member's weights of
the stage before, each member's folds merged into a uniform weight-space soup. With a `--grid`, the setting with
the best validation F4 (the folds' mean: a cross-validated estimate) is kept for each (variant, tomogram type).
Last, one task searches soup weights and per-class thresholds on the validation runs and writes
OUT/soup/soup.json, which `pick` and `ray_jobs.pick` take as it is.

    ray job submit --working-dir . -- python -m ray_jobs.tune --recipe configs/recipes/gpu-full.yaml \\
        --out /shared/tune --grid lr=0.001,0.0003
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import ray

from copick_soup.cli.util import inference_settings, split_names
from copick_soup.ensemble.tta import tta_views
from copick_soup.errors import SoupError
from copick_soup.soup.build import build_soup
from copick_soup.soup.search import check_step
from copick_soup.train.config import parse_overrides, parse_value
from copick_soup.train.recipe import (
    check_settings,
    load_recipe,
    merge_folds,
    plan_stages,
    publish_member,
    recipe_members,
    recipe_settings,
    train_fold,
)
from ray_jobs.resources import limit_torch_threads, worker_resources


@ray.remote
def train_fold_task(recipe: dict, stage: dict, variant: str, tomo_type: str, fold: int, out: str, init,
                    earlier: list, overrides: dict) -> str:
    limit_torch_threads()
    return str(train_fold(recipe, stage, variant, tomo_type, fold, out, init, earlier, overrides, resume=True,
                          echo=lambda m: None))


@ray.remote
def build_soup_task(config: str, members: list[str], val_runs: list[str], out: str, user: str, session: str,
                    step: float, tta: int) -> str:
    limit_torch_threads()
    return str(build_soup(config, members, val_runs, out, inference_settings(tta=tta), user, session, step=step,
                          echo=lambda m: None))


def parse_grid(pairs) -> list[dict]:
    """['lr=1e-3,3e-4', 'ema=0,0.99'] -> every combination as overrides: [{'lr': 0.001, 'ema': 0}, ...]."""
    axes = []
    for pair in pairs or ():
        key, _, values = pair.partition("=")
        if not key.strip() or not values.strip():
            raise SoupError(f"--grid: expected key=value,value..., got '{pair}'")
        axes.append([(key.strip(), parse_value(v.strip())) for v in values.split(",") if v.strip()])
    return [dict(combo) for combo in itertools.product(*axes)] or [{}]


def setting_name(overrides: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in overrides.items()) or "base"


def trials(recipe: dict, grid: list[dict]) -> list[dict]:
    """Every (variant, tomo type, setting) of a recipe: the members to train before choosing settings."""
    return [dict(variant=v, tomo_type=t, overrides=g, name=f"{v}-{t}", setting=setting_name(g))
            for v, t in recipe_members(recipe) for g in grid]


def validation_f4(manifest_path) -> float:
    """A member's validation F4: its own, or for a weight soup of folds the mean over its ingredients."""
    training = json.loads(Path(manifest_path).read_text()).get("training", {})
    if "val_f4" in training:
        return float(training["val_f4"])
    scores = [t.get("val_f4") for t in training.get("ingredient_training", []) if t.get("val_f4") is not None]
    return sum(scores) / len(scores) if scores else float("-inf")


def run_stages(recipe: dict, stages: list[dict], todo: list[dict], out: Path, resources: dict, timeout=None,
               echo=print) -> None:
    """Train every trial through every stage; each stage's folds of all trials run at once."""
    for stage in stages:
        futures = {}
        for t in todo:
            folder = out / "trials" / t["setting"]
            for k in range(len(stage["folds"])):
                futures[train_fold_task.options(**resources).remote(
                    recipe, stage, t["variant"], t["tomo_type"], k, str(folder), t.get("init"), t["history"],
                    t["overrides"])] = (t, k)
        echo(f"{stage['name']}: {len(futures)} trial(s) on the cluster")
        results = {}
        for future, (t, k) in futures.items():
            results.setdefault(id(t), {})[k] = ray.get(future, timeout=timeout)
        for t in todo:
            folds = [results[id(t)][k] for k in sorted(results[id(t)])]
            t["init"] = str(merge_folds(folds, out / "trials" / t["setting"], t["name"], stage["name"], echo))
            t["history"] = t["history"] + [dict(stage=stage["name"], manifest=t["init"])]
            t["score"] = validation_f4(t["init"])
            echo(f"  {t['name']} [{t['setting']}]: validation F4 {t['score']:.3f}")


def best_members(todo: list[dict], out: Path) -> dict:
    """The best setting of each (variant, tomo type), published as OUT/members/<variant>-<type>.json:
    {member name: (manifest path, setting name)}."""
    best = {}
    for t in todo:
        if t["name"] not in best or t["score"] > best[t["name"]]["score"]:
            best[t["name"]] = t
    return {name: (publish_member(t["init"], out / "members" / name), t["setting"]) for name, t in best.items()}


def tune(recipe: dict, out, grid=None, val_config=None, val_runs=None, step: float = 0.25, tta: int = 1,
         resources=None, timeout=None, echo=print) -> dict:
    """Run the whole fan-out; returns {soup, members: {name: path}, settings: {name: chosen setting}}."""
    out = Path(out).resolve()  # tasks may run in another working directory
    resources = resources or worker_resources()
    check_settings(recipe, grid or [{}])
    stages = plan_stages(recipe, out)
    last = stages[-1]
    if not val_runs and len(last["folds"]) > 1:  # before hours of training, not after
        raise SoupError("the last stage's folds train on every one of its runs: name the soup's validation runs "
                        "with --val-config and --val-runs")
    todo = [dict(t, init=None, history=[]) for t in trials(recipe, grid or [{}])]
    run_stages(recipe, stages, todo, out, resources, timeout, echo)
    chosen = best_members(todo, out)
    members = [str(path) for path, _ in chosen.values()]
    user, session, _ = recipe_settings(recipe)
    val_runs = val_runs or last["folds"][0][1]
    echo(f"soup search over {len(members)} member(s) on {len(val_runs)} validation run(s)")
    val_config = str(Path(val_config or last["config"]).resolve())
    soup = ray.get(build_soup_task.options(**resources).remote(
        val_config, members, list(val_runs), str(out / "soup"), user, session, step, tta), timeout=timeout)
    return dict(soup=soup, members={name: str(path) for name, (path, _) in chosen.items()},
                settings={name: setting for name, (_, setting) in chosen.items()})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="training recipe (configs/recipes/*.yaml)")
    parser.add_argument("--out", required=True, help="output folder (shared by the cluster's nodes)")
    parser.add_argument("--grid", action="append", default=[], help="key=v1,v2 hyperparameter axis (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every trial")
    parser.add_argument("--val-config", default=None, help="copick config of the validation runs for the soup "
                                                           "search (default: the last stage's project)")
    parser.add_argument("--val-runs", action="append", default=[], help="validation runs (default: the last "
                                                                         "stage's held-out runs)")
    parser.add_argument("--step", type=float, default=0.25, help="soup weight grid step")
    parser.add_argument("--tta", type=int, default=1)
    parser.add_argument("--cpus-per-trial", type=float, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_step(args.step)  # the soup search comes last: a bad option must not wait for the training
        tta_views(args.tta)
        recipe = load_recipe(args.recipe)
        fixed = parse_overrides(args.overrides)
        grid = [dict(fixed, **g) for g in parse_grid(args.grid)]
        check_settings(recipe, grid)
    except SoupError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True, log_to_driver=False)
    start = time.perf_counter()
    try:
        result = tune(recipe, args.out, grid, args.val_config, split_names(args.val_runs) or None, args.step,
                      args.tta, worker_resources(args.cpus_per_trial))
    except (SoupError, ray.exceptions.RayTaskError) as err:
        cause = getattr(err, "cause", None) or err  # a trial's own error, not Ray's wrapper around it
        print(f"Error: {cause}", file=sys.stderr)
        return 1
    result["seconds"] = time.perf_counter() - start
    Path(args.out, "tune-report.json").write_text(json.dumps(result, indent=2))
    print(f"soup: {result['soup']} ({len(result['members'])} members, {result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
