"""The training loop, top to bottom: sample patches, step AdamW, validate with the CZII F4, keep the best.

`train_member` trains one member (one variant on one tomogram type) on volumes already loaded; the recipe
(`recipe.py`) calls it once per stage: to pretrain on simulated runs, to fine-tune on experimental ones and, in
a recipe with a `fix_norms` stage, to fine-tune once more with fixed norms.
Everything it writes goes to `out_dir`:
  best.safetensors + best.json   the member with the best validation F4 (what `pick` and `soup` use)
  state.safetensors + state.json the latest training state, for `--resume`
  log.csv, curve.png             loss and validation F4 per epoch (an epoch is `val_every` steps)
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np

from copick_soup.device import amp_dtype, resolve_device
from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import load_member, save_member
from copick_soup.model.manifest import MemberManifest
from copick_soup.model.registry import create_model
from copick_soup.objects import ParticleClass
from copick_soup.train.config import TrainConfig
from copick_soup.train.dataset import PatchSampler
from copick_soup.train.fixed import fix_statistics, random_windows
from copick_soup.train.loss import weighted_mse
from copick_soup.train.negatives import mine_negatives
from copick_soup.train.plots import write_log
from copick_soup.train.state import load_state, save_state
from copick_soup.train.validation import validate

FIX_WINDOWS = 16  # windows measured for fixed norms' statistics (enough: benchmarks/results/archive/fixed-norms.md)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def load_init(model, manifest_or_path, classes, warn=print):
    """Start from a member's weights. Same architecture required; if its classes differ, every layer but the
    class head is taken (the head is re-initialised), which is how a lab fine-tunes for its own targets.
    Returns the member's U-Net when its instance norms are to become the model's fixed ones (see fixed.py)."""
    init, manifest = load_member(manifest_or_path)
    if list(manifest.unet.get("channels", ())) != list(model.config.channels):
        raise SoupError(f"{manifest.path}: architecture {manifest.variant} does not match the "
                        f"{len(model.config.channels)}-level model being trained")
    converting = (init.config.norm, model.config.norm) == ("instance", "fixed")
    if init.config.norm != model.config.norm and not converting:
        raise SoupError(f"{manifest.path}: its U-Net has {init.config.norm} norms, the model being trained "
                        f"{model.config.norm} norms (set norm: {init.config.norm})")
    state = init.state_dict()
    if manifest.class_names != [c.name for c in classes]:
        rows = head_rows(manifest.classes, classes)
        if rows is None:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            warn(f"{manifest.label}: its classes differ from the project's; class head re-initialised")
        else:  # the project's classes are some of the member's: their outputs keep what they learnt
            state = {k: v[rows] if k.startswith("head.") else v for k, v in state.items()}
            warn(f"{manifest.label}: the project's {len(classes)} class(es) taken from its {len(manifest.classes)}")
    model.load_state_dict(state, strict=False)
    return init if converting else None


def head_rows(member_classes, classes) -> list[int] | None:
    """Per project class, the index of the member's class it is (by name, else by GO/UniProt identifier, as
    `pick` matches them: data/classes.py); None when some project class is none of the member's."""
    names = [c.name for c in member_classes]
    identifiers = [c.identifier for c in member_classes]
    rows = []
    for c in classes:
        if c.name in names:
            rows.append(names.index(c.name))
        elif c.identifier and c.identifier in identifiers:
            rows.append(identifiers.index(c.identifier))
        else:
            return None
    return rows


def fix_norms(model, instance, volumes, rng, device: str, echo=print) -> None:
    """Give the fixed norms of `model` (weights from the instance-norm U-Net `instance`) the statistics
    `instance`'s norms take on random windows of the training volumes, 64³ where they fit."""
    smallest = min(min(v.image.shape) for v in volumes)
    side = min(64, smallest) // model.divisor * model.divisor
    windows = random_windows(volumes, FIX_WINDOWS, side, rng, device)
    fix_statistics(model, instance.to(device), windows)
    echo(f"instance norms fixed: statistics of {len(windows)} random {side}³ windows of the training runs")


def member_manifest(cfg: TrainConfig, classes, voxel_size: float, tomo_type: str, provenance: dict) -> MemberManifest:
    return MemberManifest(name=f"{cfg.variant}-{tomo_type}", variant=cfg.variant, unet={}, classes=list(classes),
                          voxel_size=voxel_size, tomo_type=tomo_type, threshold=cfg.val_threshold,
                          normalisation=dict(method=cfg.normalisation, region="central eighth of the tomogram"),
                          target=dict(kind="gaussian heatmap", sigma_scale=cfg.sigma_scale),
                          training=dict(provenance, config=cfg.as_dict()))


def mining_due(cfg: TrainConfig, step: int, mined_at: int | None) -> bool:
    """Whether to mine hard negatives before this step: at the first step, then every `hard_every` steps while at
    least half of that many are left to use them (a mining is a pass over every training volume, and negatives
    mined near the end would steer only a few patches; a short fine-tune mines once)."""
    if cfg.p_hard <= 0:
        return False
    if mined_at is None:
        return True
    return step - mined_at >= cfg.hard_every and cfg.steps - step >= cfg.hard_every / 2


def train_member(cfg: TrainConfig, classes, train_volumes, val_volumes, out_dir, voxel_size: float,
                 tomo_type: str, init=None, resume: bool = False, provenance: dict | None = None,
                 echo=print, report=None) -> Path:
    """Train one member; returns the path of its best manifest (`out_dir/best.json`).

    `report(phase, n)`, if given, hears of the work as it is done (and the loop draws no bar of its own):
    ("mining", windows), ("training", steps), ("validating", windows)."""
    import torch
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    model = create_model(cfg.variant, n_classes=len(classes), norm=cfg.norm).to(device)
    if cfg.norm == "fixed" and init is None:
        raise SoupError("norm: fixed takes its statistics from the member it starts from: give --init an "
                        "instance-norm member (or train with norm: batch)")
    resuming = resume and (out_dir / "state.json").exists()
    if init is not None:
        instance = load_init(model, init, classes, warn=echo)
        if instance is not None and not resuming:  # a resumed state holds the statistics
            fix_norms(model, instance, train_volumes, rng, device, echo)
    ema = copy.deepcopy(model).eval() if cfg.ema > 0 else None
    optimizer, frozen = make_optimizer(model, cfg)
    sampler = PatchSampler(train_volumes, classes, cfg.patch, voxel_size, cfg.sigma_scale, rng, cfg.p_particle,
                           p_hard=cfg.p_hard, randomisation=cfg.randomisation)
    manifest = member_manifest(cfg, classes, voxel_size, tomo_type, provenance or {})
    step, best, history = 0, -1.0, []
    if resuming:
        saved = json.loads((out_dir / "state.json").read_text())
        if ([ParticleClass.from_dict(c) for c in saved["classes"]] != list(classes)
                or saved["config"]["variant"] != cfg.variant or saved["config"].get("norm", "instance") != cfg.norm):
            raise SoupError(f"{out_dir / 'state.json'}: saved for other classes or another variant or norm; "
                            "cannot resume")
        meta = load_state(out_dir / "state", model, ema, optimizer)
        step, best, history = meta["step"], meta["best"], meta["history"]
        rng.bit_generator.state = meta["numpy_rng"]
        echo(f"resuming {out_dir.name} at step {step}")
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    device_type = torch.device(device).type

    losses, started = [], time.perf_counter()
    bar = None if report else tqdm(total=cfg.steps, initial=step, desc=manifest.name, unit="step", leave=False)
    write = bar.write if bar else echo
    report = report or (lambda phase, n: bar.update(n) if phase == "training" else None)
    net = ema if ema is not None else model  # what is validated, saved and mined
    mined_at = None
    while step < cfg.steps:
        if mining_due(cfg, step, mined_at):
            sampler.negatives = mine(net, train_volumes, classes, cfg, voxel_size, device, write,
                                     lambda n: report("mining", n))
            mined_at = step
        image, target = (torch.from_numpy(a).to(device) for a in sampler.batch(cfg.batch_size))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        model.train()
        for part in frozen:
            part.eval()
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = weighted_mse(model(image), target, cfg.fg_weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
                    e.copy_(cfg.ema * e + (1 - cfg.ema) * p) if e.is_floating_point() else e.copy_(p)
        step += 1
        losses.append(loss.item())
        report("training", 1)
        if bar:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % cfg.val_every and step < cfg.steps:
            continue

        # End of an epoch: validate, keep the best, save the state, log.
        score, thresholds = (validate(net, val_volumes, classes, cfg, voxel_size, device,
                                      progress=lambda n: report("validating", n)) if val_volumes else (None, None))
        f4 = score.weighted if score else float("nan")
        history.append(dict(step=step, loss=float(np.mean(losses)), val_f4=f4, lr=learning_rate(cfg, step - 1),
                            seconds=time.perf_counter() - started,
                            **({f"f4_{c.name}": c.fbeta() for c in score.classes} if score else {})))
        losses = []
        if score is None or f4 > best:
            best = f4 if score else best
            manifest.training.update(step=step, val_f4=f4 if score else None,
                                     val_per_class={c.name: c.fbeta() for c in score.classes} if score else None)
            if thresholds:
                manifest.threshold = thresholds
            save_member(out_dir / "best", net, manifest)
        save_state(out_dir / "state", model, ema, optimizer, step,
                   dict(best=best, history=history, classes=[c.as_dict() for c in classes], config=cfg.as_dict(),
                        numpy_rng=rng.bit_generator.state))
        write_log(out_dir, history)
        write(f"{manifest.name} step {step}: loss {history[-1]['loss']:.4f}"
              + (f"  val F4 {f4:.3f}" if score else "  (not validated)"))
    if bar:
        bar.close()
    return out_dir / "best.json"


def make_optimizer(model, cfg: TrainConfig):
    """(AdamW over the parameters `cfg.train_layers` trains, the frozen parts): the rest of the U-Net is taken out
    of the gradient (UNet3D.freeze), and the loop keeps the frozen parts in eval mode."""
    import torch

    frozen = model.freeze(cfg.train_layers)
    trained = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay), frozen


def mine(net, volumes, classes, cfg: TrainConfig, voxel_size: float, device: str, echo,
         progress=None) -> list[np.ndarray]:
    """The net's current hard negatives on its training volumes (see negatives.py), with a one-line count."""
    negatives = mine_negatives(net, volumes, classes, cfg, voxel_size, device, progress)
    echo(f"hard negatives: {sum(len(n) for n in negatives)} false peaks above {cfg.hard_threshold} in "
         f"{len(volumes)} training volume(s)")
    return negatives
