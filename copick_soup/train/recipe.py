"""Recipes: pretrain on simulated runs, fine-tune on experimental runs, one member per (variant, tomo type).

A recipe is a YAML file (see configs/recipes/). Each stage names its project, either an existing copick
config (`config: path`, or `--pretrain-config` / `--finetune-config`) or phantoms to simulate
(`simulate: {...}`, written once under OUT/data/STAGE and reused), plus how many runs to hold out for
validation and its training settings (`train: {...}`, and `by_variant: {unet3d_medium: {...}}` for settings of
one variant only, such as more steps for a larger U-Net). A stage with `folds: leave-one-run-out` trains one
model per run held out, all from the same start, then averages them into a uniform weight-space soup (the seed's
recipe).
An optional third stage, `fix_norms`, fine-tunes each member once more with `norm: fixed` (model/unet.py): its
instance norms take the statistics of random windows of the training runs and keep them, so that the member's
heatmap no longer depends on the window it sees (`pick --window auto` then scores as 64³ cubes do). Without a
project of its own it uses the fine-tuning stage's project and runs.
`finetune_members` is the lab path: fine-tune existing members on a lab's own annotated runs.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from copick_soup.data.kinds import match_tomogram
from copick_soup.data.project import open_project, select_runs
from copick_soup.data.tomogram import available_tomo_types
from copick_soup.errors import SoupError
from copick_soup.model.average import weight_soup
from copick_soup.model.manifest import MemberManifest
from copick_soup.objects import TOMO_TYPES, VOXEL_SIZE, classes_from_root
from copick_soup.simulate import simulate_project
from copick_soup.simulate.project import engine_names
from copick_soup.train.config import TrainConfig, override
from copick_soup.train.dataset import load_volumes
from copick_soup.train.loop import train_member

log = logging.getLogger("copick_soup.train")
STAGES = ("pretrain", "finetune", "fix_norms")
RECIPE_KEYS = {"name", "variants", "tomo_types", "voxel_size", "picks", "train", *STAGES}
STAGE_KEYS = {"simulate", "config", "val_runs", "train", "by_variant", "train_runs", "folds"}


def load_recipe(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SoupError(f"{path}: no such recipe")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SoupError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    unknown = set(recipe) - RECIPE_KEYS
    variants = {v for v, _ in recipe_members(recipe)}
    for stage in STAGES:
        if stage in recipe and recipe[stage] is None:  # `fix_norms:` alone: the stage with its defaults
            recipe[stage] = {}
        given = recipe.get(stage) or {}
        unknown |= {f"{stage}.{k}" for k in set(given) - STAGE_KEYS}
        unknown |= {f"{stage}.by_variant.{v}" for v in set(given.get("by_variant") or {}) - variants}
    if unknown:
        raise SoupError(f"{path}: unknown recipe key(s) {', '.join(sorted(unknown))}")
    if not recipe.get("pretrain") and not recipe.get("finetune"):
        raise SoupError(f"{path}: a recipe needs a 'pretrain' or a 'finetune' stage")
    recipe.setdefault("name", path.stem)
    return recipe


def with_engine(recipe: dict, engine: str) -> dict:
    """The recipe with every phantom stage simulated by `engine` (`blobs+sart`: the default recipe without `tilt`,
    a leave-one-engine-out fold) instead of its own."""
    engine_names(engine)  # an unknown engine fails here, before any work
    stages = {name: dict(recipe[name], simulate={**recipe[name]["simulate"], "engine": engine})
              for name in STAGES if (recipe.get(name) or {}).get("simulate")}
    return {**recipe, **stages}


def stage_project(stage: dict, name: str, out: Path, config_override=None) -> Path:
    """The copick config of a stage: given, or simulated once under OUT/data/NAME."""
    if config_override:
        return Path(config_override)
    if stage.get("config"):
        return Path(stage["config"])
    if not stage.get("simulate"):
        raise SoupError(f"recipe stage '{name}' needs 'config' or 'simulate'")
    config = out / "data" / name / "copick.json"
    if not config.exists():
        spec = dict(stage["simulate"])
        if "shape" in spec:
            spec["shape"] = tuple(spec["shape"])
        log.info("simulating the %s project into %s", name, config.parent)
        simulate_project(config.parent, **spec)
    return config


def split_runs(root, stage: dict, train_runs=None, val_runs=None):
    """(train runs, validation runs): explicit names win; else the last `val_runs` runs are held out."""
    runs = select_runs(root)
    train_runs = train_runs or stage.get("train_runs")
    if train_runs or val_runs:
        train = select_runs(root, train_runs) if train_runs else None
        val = select_runs(root, val_runs) if val_runs else []
        if train is None:
            held = {r.name for r in val}
            train = [r for r in runs if r.name not in held]
        both = sorted({r.name for r in train} & {r.name for r in val})
        if both:  # validation picks the checkpoint and the thresholds: on training runs it would pick overfitting
            raise SoupError(f"run(s) {', '.join(both)} are both training and validation runs; validation needs "
                            f"runs the member never trained on")
        if not train:
            raise SoupError(f"every run is a validation run ({', '.join(r.name for r in val)}); none is left to "
                            f"train on")
        return train, val
    held_out = stage.get("val_runs", 1)
    if isinstance(held_out, list):
        val = select_runs(root, held_out)
        return [r for r in runs if r.name not in held_out], val
    if held_out >= len(runs):
        raise SoupError(f"{len(runs)} run(s) cannot leave {held_out} for validation and any for training")
    return runs[: len(runs) - held_out], runs[len(runs) - held_out:]


def fold_splits(stage: dict, train_runs, val_runs) -> list[tuple[list[str], list[str]]]:
    """[(train run names, validation run names)]: one split, or one per run with `folds: leave-one-run-out`."""
    names = [r.name for r in train_runs]
    held = [r.name for r in val_runs]
    folds = stage.get("folds")
    if not folds:
        return [(names, held)]
    if folds != "leave-one-run-out":
        raise SoupError(f"recipe: folds must be 'leave-one-run-out', got {folds!r}")
    everything = names + held
    if len(everything) < 2:
        raise SoupError("recipe: leave-one-run-out folds need at least two runs")
    return [([n for n in everything if n != out], [out]) for out in everything]


def stage_config(recipe: dict, stage: dict, variant: str, overrides: dict) -> TrainConfig:
    """A member's settings: the recipe's, then its stage's, then the stage's for its variant (`by_variant`: a
    larger U-Net may need more steps), then the command line's."""
    cfg = override(TrainConfig(variant=variant), recipe.get("train") or {}, where="recipe train")
    if stage is recipe.get("fix_norms"):  # the stage's purpose; its own settings may still say otherwise
        cfg = override(cfg, dict(norm="fixed"))
    cfg = override(cfg, stage.get("train") or {}, where="recipe stage train")
    cfg = override(cfg, (stage.get("by_variant") or {}).get(variant) or {}, where=f"recipe stage by_variant {variant}")
    return override(cfg, overrides)


def refuse_earlier_training(out: Path, resume: bool) -> None:
    """Training into a folder that holds earlier training would write over it (hours of work): only with resume."""
    if not resume and (out / "stages").is_dir():
        raise SoupError(f"{out} holds earlier training ({out / 'stages'}); pass --resume to continue it, or choose "
                        f"another --out")


def check_settings(recipe: dict, settings=({},)) -> None:
    """Build every stage's training config for every variant and each set of overrides, so that a bad setting
    fails before the phantoms are simulated and the first member trains, not hours later at the next one."""
    for name in recipe_stages(recipe):
        for variant in dict(recipe_members(recipe)):
            for overrides in settings:
                stage_config(recipe, recipe[name], variant, overrides)


def recipe_settings(recipe: dict) -> tuple[str, str, float]:
    """(truth user, truth session, voxel size) of a recipe."""
    picks = recipe.get("picks") or {}
    return picks.get("user", "curation"), str(picks.get("session", "0")), float(recipe.get("voxel_size", VOXEL_SIZE))


def recipe_stages(recipe: dict) -> list[str]:
    """The stages a recipe has, in training order (`fix_norms: {}` is one: the stage with its defaults)."""
    return [name for name in STAGES if recipe.get(name) is not None]


def recipe_tomo_types(recipe: dict) -> list[str]:
    return sorted({tomo_type for _, tomo_type in recipe_members(recipe)})


def recipe_members(recipe: dict) -> list[tuple[str, str]]:
    """[(variant, tomo type)] a recipe trains: every variant on every `tomo_types`, or, where `variants` is a
    mapping, each variant on its own list (`{unet3d_tiny: [denoised, wbp], unet3d_medium: [denoised]}`)."""
    variants = recipe.get("variants") or ["unet3d_tiny"]
    if isinstance(variants, dict):
        return [(v, t) for v, types in variants.items() for t in (types or recipe.get("tomo_types") or ["denoised"])]
    return [(v, t) for v in variants for t in recipe.get("tomo_types") or ["denoised"]]


def project_stage(recipe: dict, name: str) -> str:
    """The stage whose project and runs a stage trains on: its own, or, for a `fix_norms` stage that names
    none, the fine-tuning stage's."""
    own = recipe[name].get("config") or recipe[name].get("simulate")
    return name if own or name != "fix_norms" or not recipe.get("finetune") else "finetune"


def plan_stages(recipe: dict, out: Path, configs=None) -> list[dict]:
    """Every stage the recipe has, in order; `configs` {stage: copick config} overrides a stage's project."""
    configs = configs or {}
    planned = {}
    for name in recipe_stages(recipe):  # in training order: a stage that borrows a project follows its owner
        source = project_stage(recipe, name)
        planned[name] = (dict(planned[source], name=name) if source != name
                         else plan_stage(recipe, name, out, configs.get(name)))
    return list(planned.values())


def plan_stage(recipe: dict, name: str, out: Path, config_override=None) -> dict:
    """A stage's project and folds: {name, config, folds: [(train run names, validation run names)]}.
    Simulates the stage's project (once) when the recipe asks for phantoms."""
    if not config_override and not recipe[name].get("config"):  # phantoms: refuse before simulating them
        lacking = [t for t in recipe_tomo_types(recipe) if t not in TOMO_TYPES]
        if lacking:
            raise SoupError(f"recipe stage '{name}' simulates its runs, and the simulator writes no "
                            f"{', '.join(lacking)} tomograms (only {', '.join(TOMO_TYPES)}); give the stage a "
                            f"'config' with those types")
    config = stage_project(recipe[name], name, out, config_override)
    train_runs, val_runs = split_runs(open_project(config), recipe[name])
    return dict(name=name, config=str(config), folds=fold_splits(recipe[name], train_runs, val_runs))


def train_fold(recipe: dict, stage: dict, variant: str, tomo_type: str, fold: int, out, init=None,
               earlier=(), overrides=None, resume: bool = False, echo=print) -> Path:
    """Train one (variant, tomo type) member on one fold of a stage; returns its best checkpoint's manifest.

    This is the unit of work: `run_recipe` calls it in a loop, `ray_jobs.tune` as one Ray task per trial."""
    out = Path(out)
    user, session, voxel_size = recipe_settings(recipe)
    root = open_project(stage["config"])
    classes = classes_from_root(root)
    fold_train, fold_val = stage["folds"][fold]
    name, several = stage["name"], len(stage["folds"]) > 1
    member = f"{variant}-{tomo_type}"
    cfg = stage_config(recipe, recipe[name], variant, overrides or {})
    volumes, val = (load_volumes(root, select_runs(root, runs), [tomo_type], classes, voxel_size, user, session,
                                 warn=echo, normalisation=cfg.normalisation) for runs in (fold_train, fold_val))
    provenance = dict(recipe=recipe["name"], stage=name, project=str(root.config.name), train_runs=fold_train,
                      val_runs=fold_val, init=str(init) if init else None, earlier_stages=list(earlier),
                      fold=fold if several else None, overrides=overrides or {})
    echo(f"{member}: {name}{f' fold {fold}' if several else ''} on {len(fold_train)} run(s), validating on "
         f"{len(fold_val)}")
    folder = out / "stages" / member / (f"{name}-fold{fold}" if several else name)
    return train_member(cfg, classes, volumes, val, folder, voxel_size, tomo_type, init=init, resume=resume,
                        provenance=provenance, echo=echo)


def merge_folds(results: list[Path], out, member: str, stage: str, echo=print) -> Path:
    """One member from a stage's folds: the fold itself, or their uniform weight-space soup (the seed's recipe)."""
    if len(results) == 1:
        return Path(results[0])
    return weight_soup(results, Path(out) / "stages" / member / f"{stage}-uniform", "uniform", echo=echo)


def run_recipe(recipe: dict, out, pretrain_config=None, finetune_config=None, overrides=None,
               resume: bool = False, echo=print) -> list[Path]:
    """Train every (variant, tomo type) member of a recipe; returns the member manifests in OUT."""
    out = Path(out)
    refuse_earlier_training(out, resume)
    check_settings(recipe, [overrides or {}])
    stages = plan_stages(recipe, out, dict(pretrain=pretrain_config, finetune=finetune_config))
    members = []
    for variant, tomo_type in recipe_members(recipe):
        member = f"{variant}-{tomo_type}"
        init, history = None, []
        for stage in stages:
            results = [train_fold(recipe, stage, variant, tomo_type, k, out, init, history, overrides, resume,
                                  echo) for k in range(len(stage["folds"]))]
            init = merge_folds(results, out, member, stage["name"], echo)
            history.append(dict(stage=stage["name"], manifest=str(init)))
        members.append(publish_member(init, out / member))
    return members


def publish_member(best_manifest: Path, target: Path) -> Path:
    """Copy a stage's best member to OUT/<member>.safetensors + .json, the files `pick` and `soup` read."""
    manifest = MemberManifest.read(best_manifest)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest.weights_path, target.with_suffix(".safetensors"))
    manifest.weights = target.with_suffix(".safetensors").name
    return manifest.write(target.with_suffix(".json"))


def runnable_members(manifests: list[MemberManifest], runs, echo=print) -> list[MemberManifest]:
    """The members whose tomogram type the training runs hold (a lab's runs often carry only some types); the
    others are left out, and it says so. None at all is an error naming the types the runs have."""
    def has(run, m):  # a tomogram of the member's kind (data/kinds.py)
        return match_tomogram(m.tomo_type, available_tomo_types(run, m.voxel_size))[0] is not None

    usable = [m for m in manifests if any(has(run, m) for run in runs)]
    for m in manifests:
        if m not in usable:
            echo(f"{m.name}: left out (no '{m.tomo_type}' tomograms at {m.voxel_size:g} Å in the training runs)")
    if not usable:
        have = sorted({t for m in manifests for run in runs for t in available_tomo_types(run, m.voxel_size)})
        raise SoupError(f"none of the members' tomogram types ({', '.join(sorted({m.tomo_type for m in manifests}))}) "
                        f"is in the training runs; they have {', '.join(have) or 'none at that voxel size'}")
    return usable


# A lab fine-tune's settings, over the member's own, chosen on held-out runs of an engine the soup never saw
# (`sart`, 3+1 runs of 128x256x256, 4 held out; benchmarks/results/finetune.md, finetune-layers.md). The class head
# alone: `fast` fine-tuned 300 steps scored 0.653 with the head, 0.629 with the decoder (1000 steps), 0.583 with every
# layer (0.533 at lr 1e-4, 600 steps), since a few runs' particles overfit the features the simulators taught. 300
# steps: 0.598 at 100, 0.653 at 300, 0.628 at 1000 (about +-0.02 between repeats); the whole `finetune` of `fast`
# took 132 s.
LAB_SETTINGS = dict(steps=300, lr=5e-4, warmup=10, train_layers="head")


def lab_config(manifest: MemberManifest, overrides=None) -> TrainConfig:
    """A lab fine-tune's settings for a member: the member's own (same variant), LAB_SETTINGS, normalised as the
    member was trained, then `overrides`. A fixed-norm member validates (and mines) in the crop tiling `pick`
    runs it in: its heatmaps do not depend on the window, and that tiling computes each voxel about once where
    64³ cubes compute 2.4x."""
    saved = TrainConfig.from_saved({**manifest.training_config(), "variant": manifest.variant})
    lab = dict(LAB_SETTINGS, normalisation=manifest.normalisation_method)
    if saved.norm == "fixed":
        lab["val_window"] = 0
    return override(saved, dict(lab, **(overrides or {})))


def lab_volumes(root, manifests, configs, classes, train, val, picks_user="curation", picks_session="0",
                echo=print) -> list[tuple]:
    """Per member, its (training volumes, validation volumes), read once per tomogram type and normalisation."""
    cache = {}
    for manifest, cfg in zip(manifests, configs):
        key = (manifest.tomo_type, manifest.voxel_size, cfg.normalisation)
        if key not in cache:
            cache[key] = tuple(load_volumes(root, runs, [manifest.tomo_type], classes, manifest.voxel_size,
                                            picks_user, picks_session, warn=echo, normalisation=cfg.normalisation)
                               for runs in (train, val))
    return [cache[(m.tomo_type, m.voxel_size, c.normalisation)] for m, c in zip(manifests, configs)]


def finetune_member(root, manifest: MemberManifest, cfg: TrainConfig, classes, volumes, val_volumes, out, train,
                    val, resume: bool = False, echo=print, report=None) -> Path:
    """Fine-tune one member on a lab's volumes; returns its manifest, published as OUT/<member>.json."""
    provenance = dict(recipe="lab fine-tune", project=str(root.config.name), init=str(manifest.path),
                      train_runs=[r.name for r in train], val_runs=[r.name for r in val])
    echo(f"{manifest.name}: fine-tuning on {len(train)} run(s), validating on {len(val) if val_volumes else 0}")
    best = train_member(cfg, classes, volumes, val_volumes, out / "stages" / manifest.name / "finetune",
                        manifest.voxel_size, manifest.tomo_type, init=manifest.path, resume=resume,
                        provenance=provenance, echo=echo, report=report)
    return publish_member(best, out / manifest.name)


def finetune_members(config, init_members: list[Path], out, train_runs=None, val_runs=None,
                     picks_user: str = "curation", picks_session: str | None = "0", overrides=None,
                     resume: bool = False, echo=print) -> list[Path]:
    """Fine-tune each given member on a lab's annotated runs (same variant, same tomogram type)."""
    out = Path(out)
    refuse_earlier_training(out, resume)
    root = open_project(config)
    classes = classes_from_root(root)
    train, val = split_runs(root, {"val_runs": 1 if not val_runs else val_runs}, train_runs, val_runs)
    manifests = runnable_members([MemberManifest.read(p) for p in init_members], train, echo)
    configs = [lab_config(m, overrides) for m in manifests]
    volumes = lab_volumes(root, manifests, configs, classes, train, val, picks_user, picks_session, echo)
    return [finetune_member(root, m, cfg, classes, *v, out, train, val, resume, echo)
            for m, cfg, v in zip(manifests, configs, volumes)]
