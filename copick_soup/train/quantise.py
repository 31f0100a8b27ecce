"""INT8 members by quantisation-aware fine-tuning, the member its own teacher.

Post-training quantisation alone moves a member's heatmap at particle centres by about 12% and loses picks
(docs/decisions.md). Here NNCF places and ranges the quantisers as post-training quantisation does
(model/int8.py), then the quantised copy is trained for a few hundred steps to give the float member's heatmap on
the member's own kind of patches (weighted MSE, foreground as in training), with the quantisers in the loop. Its
target is the float member, not the particle map, so its scores keep their scale and the member's thresholds
stay valid. On the 8 held-out `sart` runs the tiny `denoised` member went from 0.552 (float32) to 0.497 with
post-training quantisation alone and 0.553 after 300 steps (`docs/results.md`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from copick_soup.data.project import open_project, select_runs
from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import check_member, load_member, save_member
from copick_soup.model.int8 import quantised
from copick_soup.train.config import TrainConfig
from copick_soup.train.dataset import PatchSampler, load_volumes
from copick_soup.train.loss import weighted_mse

CALIBRATION_PATCHES = 32  # patches that range the quantisers before fine-tuning


def quantise_member(member, volumes, out, steps: int = 300, lr: float = 1e-4, seed: int = 0, echo=print) -> Path:
    """An INT8 copy of `member` (a manifest path) fine-tuned on patches of `volumes` (TrainVolumes of its tomogram
    type, normalised as it normalises), written to folder `out` as `<name>-int8`; returns its manifest's path."""
    import torch

    torch.manual_seed(seed)
    teacher, manifest = load_member(member)
    teacher = teacher.float().eval()
    cfg = TrainConfig.from_saved({**manifest.training_config(), "variant": manifest.variant})
    sampler = PatchSampler(volumes, manifest.classes, cfg.patch, manifest.voxel_size,
                           cfg.sigma_scale, np.random.default_rng(seed), cfg.p_particle)
    student = quantised(copy.deepcopy(teacher),
                        [torch.from_numpy(sampler.batch(1)[0]) for _ in range(CALIBRATION_PATCHES)], manifest.label)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    started, losses = time.perf_counter(), []
    student.train()
    for step in range(1, steps + 1):
        image = torch.from_numpy(sampler.batch(cfg.batch_size)[0])
        with torch.no_grad():
            target = teacher(image)
        loss = weighted_mse(student(image), target, cfg.fg_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps:
            echo(f"{manifest.name}-int8 step {step}: distillation loss {np.mean(losses[-50:]):.2e} "
                 f"({time.perf_counter() - started:.0f} s)")
    record = dict(method="quantisation-aware fine-tuning (NNCF), the float member as teacher", steps=steps, lr=lr,
                  seed=seed, volumes=len(volumes), teacher=manifest.name, teacher_sha256=manifest.sha256,
                  loss=float(np.mean(losses[-50:])))
    int8 = replace(manifest, name=f"{manifest.name}-int8", extra={**manifest.extra, "int8": record})
    return save_member(Path(out) / f"{int8.name}.json", student.eval(), int8)


def quantise_on_project(config, member, out, run_names=(), picks_user: str = "curation", picks_session="0",
                        steps: int = 300, lr: float = 1e-4, echo=print) -> Path:
    """`quantise_member` on the runs of a copick project that have picks (all, or those named): the member's
    tomogram type, normalised as it normalises. The picks only centre most patches on particles; the targets are
    the float member's heatmaps, so runs need not be fully annotated."""
    manifest = check_member(member)
    root = open_project(config)
    volumes = load_volumes(root, select_runs(root, list(run_names)), [manifest.tomo_type], manifest.classes,
                           manifest.voxel_size, picks_user, picks_session, warn=echo,
                           normalisation=manifest.normalisation_method)
    if not volumes:
        raise SoupError(f"{config}: no run has picks by '{picks_user}' and a '{manifest.tomo_type}' tomogram for "
                        f"{manifest.label}")
    return quantise_member(manifest.path, volumes, out, steps, lr, echo=echo)
