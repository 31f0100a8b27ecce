"""One network that gives a soup's heatmaps: the soup is the teacher, a student member learns its blended heatmap.

A soup of four members costs four networks per window; a student as small as the soup's smallest member costs one.
The teacher runs over whole runs as `pick` runs it (its members, each on its own tomogram type, blended with the
soup's weights), and the student learns that heatmap from one tomogram type, on patches cropped, zoomed and
randomised as in training (train/dataset.py: a volume's `target`). Its targets are the soup's scores, not Gaussians
at the particles, so the soup's thresholds keep their meaning and the runs need no annotation: the teacher's own
picks only centre the patches. Validation runs (with truth) choose the checkpoint as in every training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from copick_soup.data import angstrom_to_voxel
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.ensemble import blend
from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import check_member
from copick_soup.train.config import TrainConfig, override
from copick_soup.train.dataset import TrainVolume, load_image

# A student starts from a member's weights and trains every layer; no hard negatives (the teacher's heatmap already
# says where it is quiet), and the member's own randomisation (particle size, blur, noise, contrast) stays on.
STUDENT_SETTINGS = dict(train_layers="all", lr=5e-4, warmup=20, p_hard=0.0)


def teacher_volumes(soup: Ensemble, runs, tomo_type: str, normalisation: str,
                    settings: InferenceSettings | None = None, echo=print) -> list[TrainVolume]:
    """Per run, the student's tomogram (`tomo_type`, normalised as the student is) with the soup's blended heatmap
    as its target and the soup's picks as its points; runs where the soup or the student cannot read are skipped
    with a line naming them."""
    settings = settings or InferenceSettings()
    volumes = []
    for run in runs:
        loaded = load_image(run, soup.voxel_size, tomo_type, normalisation, echo)
        if loaded is None:
            continue
        image, grid = loaded
        heatmap = blend(soup.member_heatmaps(run, settings, echo), [m.weight for m in soup.members])
        if heatmap is None:
            echo(f"run {run.name}: no member of soup '{soup.name}' can run here; skipped")
            continue
        if heatmap.shape[1:] != image.shape:
            raise SoupError(f"run {run.name}: the soup's heatmap {heatmap.shape[1:]} and the '{tomo_type}' "
                            f"tomogram {image.shape} differ in shape")
        picks = soup.picks(heatmap)
        points = [angstrom_to_voxel(picks[c.name][0], soup.voxel_size) for c in soup.classes]
        volumes.append(TrainVolume(run.name, tomo_type, image, points, heatmap.astype(np.float16)))
    return volumes


def student_config(student, steps: int, overrides: dict | None = None) -> TrainConfig:
    """The student's training settings: its init member's own, STUDENT_SETTINGS, `steps`, then `overrides`."""
    manifest = check_member(student)
    saved = TrainConfig.from_saved({**manifest.training_config(), "variant": manifest.variant})
    return override(saved, dict(STUDENT_SETTINGS, steps=steps, val_every=max(steps // 4, 1),
                                normalisation=manifest.normalisation_method, **(overrides or {})))


def distil(soup: Ensemble, student, train_volumes, val_volumes, out, cfg: TrainConfig, echo=print,
           report=None) -> Path:
    """Train `student` (a member's manifest path: its variant, tomogram type and starting weights) on the teacher's
    volumes; the checkpoint with the best validation F4 goes to OUT/best.json, which this returns."""
    from copick_soup.train.loop import train_member

    manifest = check_member(student)
    teacher = dict(soup=soup.name, members={m.manifest.name: dict(weight=m.weight, sha256=m.manifest.sha256)
                                            for m in soup.members},
                   runs=[v.run for v in train_volumes])
    return train_member(cfg, soup.classes, train_volumes, val_volumes, Path(out), soup.voxel_size,
                        manifest.tomo_type, init=manifest.path, provenance=dict(distilled_from=teacher),
                        echo=echo, report=report)
