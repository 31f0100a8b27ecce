"""A lab's path in one command (`copick-soup finetune`): fine-tune every member of a soup that the lab's annotated
runs allow, search the new soup's weights and thresholds on its validation runs, write the soup folder.

It checks its input and plans before any work: the members kept and left out, the steps per member, and how long
each phase should take, from rates measured on this machine a moment before (one training step and one window of
inference per member, one peak search), not from constants. Then it works under one progress bar over the whole
job. The networks run over whole tomograms as `pick` runs them (train/validation.py: OpenVINO on a CPU, the crop
tiling for fixed-norm members): to mine hard negatives (once, for a short fine-tune: train/loop.py's
`mining_due`), to validate and to search the soup. A member is validated during training only when a validation
could change the checkpoint chosen, that is when there are two or more; a lone final validation would only repeat
what the soup search computes on the same runs, and the search's scores for each member go into its manifest.

OUT/soup.json is the soup (`pick --soup OUT`), OUT/members/ its members, OUT/members/stages/ their training logs,
OUT/finetune.json the plan's and the real time of each phase.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from copick_soup.data.classes import mapping_lines
from copick_soup.data.picks import read_picks
from copick_soup.data.project import list_names, open_project
from copick_soup.device import amp_dtype, resolve_device
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.peaks import heatmaps_to_picks
from copick_soup.ensemble.thresholds import FLOOR
from copick_soup.ensemble.tiling import SLOWER_WITH_SIZE
from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import load_member
from copick_soup.model.manifest import MemberManifest, SoupManifest
from copick_soup.model.registry import create_model
from copick_soup.objects import classes_from_root
from copick_soup.soup.build import build_soup
from copick_soup.soup.search import simplex_grid
from copick_soup.train.config import TrainConfig
from copick_soup.train.dataset import PatchSampler
from copick_soup.train.loop import head_rows, make_optimizer, mining_due
from copick_soup.train.loss import weighted_mse
from copick_soup.train.recipe import (
    finetune_member,
    lab_config,
    lab_volumes,
    runnable_members,
    split_runs,
)
from copick_soup.train.validation import val_settings

PHASES = ("mining", "training", "validating", "soup search")
SEARCH_STEP = 0.25  # the soup search's weight grid, as `copick-soup soup`'s default


@dataclass
class InferenceRate:
    """How long one member takes to run over volumes, from one measured window: the runtime's setup (OpenVINO's
    conversion), a compilation per window shape, and each window's time, scaled from the measured one by voxels
    as tiling.py's SLOWER_WITH_SIZE says larger windows run."""

    setup_s: float
    compile_s: float
    window_s: float
    window_voxels: int
    slower: float

    def window(self, voxels: int) -> float:
        return self.window_s * (voxels / self.window_voxels) ** (1 + self.slower)

    def pass_seconds(self, tilings) -> float:
        """One pass (one network conversion) over volumes cut as `tilings` [(Tiling, shape)] say."""
        shapes = {t.window for t, _ in tilings}
        return (self.setup_s + self.compile_s * len(shapes)
                + sum(t.count(shape) * self.window(math.prod(t.window)) for t, shape in tilings))


@dataclass
class MemberPlan:
    """One member's fine-tune and what each of its phases should cost, in seconds."""

    manifest: MemberManifest
    cfg: TrainConfig
    volumes: list  # TrainVolume
    val_volumes: list  # TrainVolume
    validate: bool  # validate during training: only where a validation can change the checkpoint chosen
    settings: object = None  # InferenceSettings: how mining and validation run it
    unet: object = None  # its UNetConfig, for the tiling
    rate: InferenceRate | None = None  # measured
    step_s: float = 0.0  # one training step, measured
    windows: dict = field(default_factory=dict)  # phase -> windows of inference it runs
    seconds: dict = field(default_factory=dict)  # phase -> estimated seconds

    @property
    def name(self) -> str:
        return self.manifest.name

    def tilings(self, volumes) -> list[tuple]:
        """[(Tiling, shape)] of volumes as this member runs over them."""
        return [(self.settings.tiling(v.image.shape, [self.unet]), v.image.shape) for v in volumes]

    def per_unit(self, phase: str) -> float:
        """Estimated seconds per unit of `phase` the training loop reports (a step, a window)."""
        if phase == "training":
            return self.step_s
        return self.seconds.get(phase, 0.0) / max(self.windows.get(phase, 0), 1)


@dataclass
class Plan:
    members: list  # MemberPlan
    left_out: list  # lines saying which members are left out and why
    read_s: float  # the tomograms were read in this long (done before the plan)
    search_windows: int
    search_s: dict  # 'heatmaps' and 'search' seconds

    def phase_seconds(self) -> dict:
        out = {p: sum(m.seconds.get(p, 0.0) for m in self.members) for p in PHASES[:3]}
        out["soup search"] = sum(self.search_s.values())
        return out

    @property
    def total(self) -> float:
        return sum(self.phase_seconds().values())

    def lines(self) -> list[str]:
        lines = ["plan:"]
        for m in self.members:
            lines.append(f"  {m.name}: {m.cfg.steps} steps ({m.step_s:.2f} s each), "
                         + ", ".join(f"{p} {minutes(m.seconds[p])}" for p in PHASES[:3] if m.seconds.get(p)))
        lines += [f"  {line}" for line in self.left_out]
        phases = self.phase_seconds()
        lines.append("  expected: " + ", ".join(f"{p} {minutes(s)}" for p, s in phases.items())
                     + f"; total {minutes(self.total)} (tomograms read in {minutes(self.read_s)})")
        return lines


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ---- input checks --------------------------------------------------------------------------------------------


def choose_members(init: str, names) -> tuple[list[MemberManifest], list[str]]:
    """(the init soup's members that it weighs, or those of them named (`--members`); lines saying which were left
    out and why). A member at weight 0 adds nothing to the soup's picks, and fine-tuned it stayed at 0 (`fast`'s
    `wbp` member on `sart`, benchmarks/results/archive/finetune-fast-300-both.md): fine-tuning it by default would
    only cost time."""
    soup = SoupManifest.read(init)
    manifests = [MemberManifest.read(m.path) for m in soup.members]
    if names:
        unknown = [n for n in names if n not in {m.name for m in manifests}]
        if unknown:
            raise SoupError(f"--members: no member {list_names(unknown)} in the init soup; it has "
                            f"{list_names([m.name for m in manifests])}")
        return [m for m in manifests if m.name in names], []
    weights = [m.weight for m in soup.members]
    if not any(w > 0 for w in weights):  # a folder of members, or a soup not searched: every member
        return manifests, []
    return ([m for m, w in zip(manifests, weights) if w > 0],
            [f"{m.name}: left out (weight 0 in '{init}'; --members {m.name} fine-tunes it)"
             for m, w in zip(manifests, weights) if w <= 0])


def check_classes(classes, manifests, init: str) -> list[str]:
    """Every project class must be one of the members' (by name or identifier): a fine-tune of minutes keeps what
    the class head learnt, and cannot learn a new class from scratch. Returns the lines saying how they match."""
    member_classes = manifests[0].classes
    if head_rows(member_classes, classes) is None:
        names = [c.name for c in member_classes]
        idents = {c.identifier for c in member_classes if c.identifier}
        unmatched = [c.name for c in classes if c.name not in names and c.identifier not in idents]
        raise SoupError(f"class(es) {list_names(unmatched)} of the project match no class of the members of "
                        f"'{init}' by name or identifier (they have {list_names(names)}); a new class needs "
                        f"members trained for it: copick-soup train --init")
    rows = head_rows(member_classes, classes)
    mapping = {member_classes[r].name: c.name for r, c in zip(rows, classes)}
    return mapping_lines([member_classes[r] for r in rows], mapping)


def check_picks(classes, train, val, user: str, session) -> None:
    """Every training run holds picks, every class is picked in some training run, and every validation run
    holds picks to score against: else one line naming the runs or classes."""
    names = [c.name for c in classes]
    who = f"user '{user}' session '{session}'"
    counts = {run.name: {n: len(p) for n, p in read_picks(run, names, user, session).items()} for run in train}
    empty = [run for run, c in counts.items() if not sum(c.values())]
    if empty:
        raise SoupError(f"training run(s) {list_names(empty)} hold no picks by {who}")
    missing = [n for n in names if not any(c[n] for c in counts.values())]
    if missing:
        raise SoupError(f"no training run ({list_names(list(counts))}) holds picks of {list_names(missing)} by "
                        f"{who}; annotate some, or remove the class(es) from the project's pickable objects")
    unscored = [run.name for run in val if not any(len(p) for p in read_picks(run, names, user, session).values())]
    if unscored:
        raise SoupError(f"validation run(s) {list_names(unscored)} hold no picks by {who} to score against")


# ---- measured rates ------------------------------------------------------------------------------------------


def time_step(cfg: TrainConfig, classes, volumes, voxel_size: float) -> float:
    """Seconds of one training step of this member as the loop takes it: a batch of patches, forward, backward,
    AdamW and the EMA update (the weights do not change the time; the model is a fresh one)."""
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    model = create_model(cfg.variant, n_classes=len(classes), norm=cfg.norm).to(device)
    optimizer, _ = make_optimizer(model, cfg)  # the loop's: the same parameters trained
    sampler = PatchSampler(volumes, classes, cfg.patch, voxel_size, cfg.sigma_scale, np.random.default_rng(0),
                           cfg.p_particle, randomisation=cfg.randomisation)
    times = []
    # A fresh process warms up over several steps (kernels, the allocator): on 2 cores the tiny member's first steps
    # took 1.2, 0.45, 0.37, 0.29 s and its loop 0.23 s a step. So steps run for 3 s (3 to 8 of them), and the median
    # of the last three is a step's time.
    while len(times) < 3 or (len(times) < 8 and sum(times) < 3.0):
        started = time.perf_counter()
        image, target = (torch.from_numpy(a).to(device) for a in sampler.batch(cfg.batch_size))
        with torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = weighted_mse(model(image), target, cfg.fg_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cfg.ema > 0:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(cfg.ema)  # as long as the EMA's update
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(np.median(times[-3:]))


def time_inference(model, settings, side: int) -> InferenceRate:
    """Run a member's network on one side³ window as `pick` would (runtime, precision) and time it."""
    ensemble = Ensemble.of_model(model.eval(), [], 0.0)
    started = time.perf_counter()
    predict = ensemble.predictor(ensemble.members[0], settings)
    setup = time.perf_counter() - started
    x = torch.randn(settings.batch, 1, side, side, side)
    times = []
    for _ in range(2):  # the first call compiles for the shape (OpenVINO), the second is a window's time
        started = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - started)
    slower = SLOWER_WITH_SIZE["cpu" if settings.on_cpu else "cuda"]
    return InferenceRate(setup, max(times[0] - times[1], 0.0), times[1] / settings.batch, side ** 3, slower)


def time_peaks(classes, voxel_size: float) -> float:
    """Seconds per heatmap voxel and class of a peak search at the search's lowest threshold, blend included."""
    rng = np.random.default_rng(0)
    heat = rng.random((len(classes), 32, 64, 64), dtype=np.float32) ** 8  # mostly dark, some peaks
    started = time.perf_counter()
    blended = heat * np.float32(0.5) + heat * np.float32(0.5)
    heatmaps_to_picks(blended, classes, voxel_size, FLOOR)
    return (time.perf_counter() - started) / heat.size


def calibrate(m: MemberPlan, classes, peak_s: float) -> None:
    """Fill in a member's windows and seconds per phase from rates measured now."""
    device = resolve_device(m.cfg.device)
    m.settings = val_settings(m.cfg, device)
    model, _ = load_member(m.manifest.path, device)
    m.unet = model.config
    smallest = min(min(v.image.shape) for v in m.volumes + m.val_volumes)
    side = max(min(64, smallest) // model.divisor * model.divisor, model.divisor)
    m.rate = time_inference(model, m.settings, side)
    m.step_s = time_step(m.cfg, classes, m.volumes, m.manifest.voxel_size)

    def peaks(volumes):
        return sum(v.image.size for v in volumes) * len(classes) * peak_s

    passes = sum(mining_due(m.cfg, step, mined) for step, mined in mining_steps(m.cfg))
    epochs = len(validation_steps(m.cfg)) if m.validate else 0
    for phase, volumes, count in (("mining", m.volumes, passes), ("validating", m.val_volumes, epochs)):
        m.windows[phase] = count * sum(t.count(shape) for t, shape in m.tilings(volumes))
        m.seconds[phase] = count * (m.rate.pass_seconds(m.tilings(volumes)) + peaks(volumes))
    m.seconds["training"] = m.cfg.steps * m.step_s


def mining_steps(cfg: TrainConfig):
    """(step, step of the last mining) for each step of the loop, as it decides when to mine."""
    mined = None
    for step in range(cfg.steps):
        yield step, mined
        if mining_due(cfg, step, mined):
            mined = step


def validation_steps(cfg: TrainConfig) -> list[int]:
    """The steps after which the loop validates: every `val_every`, and the last."""
    return sorted({*range(cfg.val_every, cfg.steps + 1, cfg.val_every), cfg.steps})


def plan_search(members: list[MemberPlan], classes, peak_s: float, settings) -> tuple[int, dict]:
    """(windows, {'heatmaps': s, 'search': s}) of the soup search with `settings`: each member over each
    validation run, in the tiling chosen for all of them (as `pick` chooses it), then a blend and a peak search per
    weighting tried (and three more with cross-class suppression)."""
    val = members[0].val_volumes
    tilings = [(settings.tiling(v.image.shape, [m.unet for m in members], len(members)), v.image.shape) for v in val]
    windows = len(members) * sum(t.count(shape) for t, shape in tilings)
    heat = sum(m.rate.pass_seconds(tilings) for m in members)
    weightings = len(simplex_grid(len(members), SEARCH_STEP)) + 3
    search = weightings * sum(v.image.size for v in val) * len(classes) * peak_s
    return windows, dict(heatmaps=heat, search=search)


# ---- the job --------------------------------------------------------------------------------------------------


def plan_finetune(config, init: str, out, train_runs, val_runs, picks_user="curation", picks_session="0",
                  steps: int | None = None, members=(), settings=None, overrides=None, echo=print):
    """Check everything, read the tomograms, measure the rates and return (root, classes, train, val, Plan);
    `settings`: the soup search's InferenceSettings (resolved); `overrides`: training settings over the lab's
    (`--set`). Writes nothing."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):  # a soup, or an interrupted fine-tune's members: nothing is overwritten
        raise SoupError(f"--out {out}: not empty; choose a new folder for the soup")
    if not val_runs:
        raise SoupError("--val-runs: name the validation runs (annotated runs that do not train)")
    root = open_project(config)
    classes = classes_from_root(root)
    train, val = split_runs(root, {}, train_runs, val_runs)
    manifests, left_out = choose_members(init, members)
    for line in check_classes(classes, manifests, init):
        echo(line)
    check_picks(classes, train, val, picks_user, picks_session)
    try:
        kept = runnable_members(manifests, train, echo=left_out.append)
    except SoupError as err:  # say, too, which members the init soup's weights left out
        raise SoupError("; ".join([str(err), *left_out])) from None
    configs = [lab_config(m, {**(overrides or {}), **({"steps": steps} if steps else {})}) for m in kept]
    started = time.perf_counter()
    volumes = lab_volumes(root, kept, configs, classes, train, val, picks_user, picks_session, echo)
    read_s = time.perf_counter() - started
    peak_s = time_peaks(classes, kept[0].voxel_size)
    plans = []
    for manifest, cfg, (train_volumes, val_volumes) in zip(kept, configs, volumes):
        if not train_volumes or not val_volumes:
            left_out.append(f"{manifest.name}: left out (no readable '{manifest.tomo_type}' tomogram in the "
                            f"{'training' if not train_volumes else 'validation'} runs)")
            continue
        # one validation, at the end, cannot change the checkpoint chosen: the soup search scores the member
        m = MemberPlan(manifest, cfg, train_volumes, val_volumes, validate=len(validation_steps(cfg)) > 1)
        calibrate(m, classes, peak_s)
        plans.append(m)
    if not plans:
        raise SoupError("no member can be fine-tuned on these runs: " + "; ".join(left_out))
    windows, search = plan_search(plans, classes, peak_s, settings)
    return root, classes, train, val, Plan(plans, left_out, read_s, windows, search)


def check_budget(plan: Plan, budget: float | None) -> None:
    """A plan over `budget` minutes is refused in one line that says what to cut."""
    if budget is None or plan.total <= budget * 60:
        return
    rest = plan.total - plan.phase_seconds()["training"]
    per_step = sum(m.step_s for m in plan.members)
    fit = int((budget * 60 - rest) / per_step) if budget * 60 > rest else 0
    costliest = max(plan.members, key=lambda m: sum(m.seconds.values()))
    cut = f"--steps {fit} would fit" if fit > 0 else "no number of steps fits with every member"
    raise SoupError(f"the plan takes about {minutes(plan.total)}, over --budget {budget:g} min: {cut}, or fine-tune "
                    f"fewer members with --members (the costliest, {costliest.name}, takes "
                    f"{minutes(sum(costliest.seconds.values()))})")


class Progress:
    """One bar over the whole job, in estimated seconds of work, so that its ETA is the plan's, corrected by the
    pace the job really goes at; the description names the phase. It also adds up the wall time each phase took
    (the time up to a report is the reported phase's), for OUT/finetune.json."""

    def __init__(self, plan: Plan):
        from tqdm import tqdm

        self.bar = tqdm(total=round(plan.total, 1), bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                        "[{elapsed} elapsed, about {remaining} left]", dynamic_ncols=True)
        self.spent = dict.fromkeys(PHASES, 0.0)
        self.last = time.perf_counter()

    def done(self, phase: str, seconds_of_plan: float) -> None:
        now = time.perf_counter()
        self.spent[phase] += now - self.last
        self.last = now
        self.bar.update(seconds_of_plan)

    def member(self, m: MemberPlan):
        """The `report(phase, n)` a member's training loop calls."""
        def report(phase, n):
            self.set(f"{m.name}: {phase}")
            self.done(phase, n * m.per_unit(phase))
        return report

    def set(self, description: str) -> None:
        if self.bar.desc != description:
            self.bar.set_description_str(description)

    def finish(self) -> None:
        self.done("soup search", max(self.bar.total - self.bar.n, 0))
        self.bar.close()


def finetune_soup(config, init: str, out, train_runs, val_runs, picks_user="curation", picks_session="0",
                  steps: int | None = None, members=(), budget: float | None = None, settings=None,
                  overrides=None, echo=print) -> Path:
    """Fine-tune the members of `init` on the training runs, search the soup on the validation runs, write
    OUT/soup.json; returns its path. Every check, the plan and the budget come before any work."""
    out = Path(out)
    settings = (settings or InferenceSettings()).resolved()
    root, classes, train, val, plan = plan_finetune(config, init, out, train_runs, val_runs, picks_user,
                                                    picks_session, steps, members, settings, overrides, echo)
    for line in plan.lines():
        echo(line)
    check_budget(plan, budget)

    progress = Progress(plan)
    say = progress.bar.write
    tuned = []
    for m in plan.members:
        progress.set(f"{m.name}: starting")
        tuned.append(finetune_member(root, m.manifest, m.cfg, classes, m.volumes, m.val_volumes if m.validate else [],
                                     out / "members", train, val, echo=say, report=progress.member(m)))
    progress.set("soup search")
    per_window = plan.search_s["heatmaps"] / max(plan.search_windows, 1)
    soup = build_soup(config, [str(p) for p in tuned], [r.name for r in val], out,
                      settings, picks_user, picks_session, SEARCH_STEP,
                      name=out.name, echo=say, progress=lambda n: progress.done("soup search", n * per_window))
    progress.finish()
    record_member_scores(soup)
    tidy(out / "members")
    planned = plan.phase_seconds()
    record = dict(steps={m.name: m.cfg.steps for m in plan.members}, left_out=plan.left_out, read_s=plan.read_s,
                  planned_s=planned, spent_s=progress.spent)
    (out / "finetune.json").write_text(json.dumps(record, indent=2))
    echo("took " + ", ".join(f"{p} {minutes(progress.spent[p])} (planned {minutes(planned[p])})" for p in PHASES)
         + f"; total {minutes(sum(progress.spent.values()))}")
    return soup


def record_member_scores(soup_path: Path) -> None:
    """Each member's own validation F4 and best thresholds, as the soup search found them (the validation the
    training skipped), into its manifest."""
    soup = SoupManifest.read(soup_path)
    singles = soup.validation.get("members", {})
    for path in soup.member_paths:
        found = singles.get(Path(path).stem)
        manifest = MemberManifest.read(path)
        if found and manifest.training.get("val_f4") is None:
            manifest.threshold = found["thresholds"]
            manifest.training.update(val_f4=found["score"], val_per_class=found["per_class"],
                                     validated_by="the soup search")
            manifest.write(path)


def tidy(members: Path) -> None:
    """Drop the training states and the checkpoints the members were copied from (nothing resumes them: the
    command starts afresh); the logs and curves stay."""
    for folder in (members / "stages").glob("*/finetune"):
        for name in ("state", "best"):
            for suffix in (".safetensors", ".json"):
                (folder / name).with_suffix(suffix).unlink(missing_ok=True)
