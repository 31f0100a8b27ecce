"""Validation during training, through the ensemble pipeline: the model being trained is a one-member ensemble,
its heatmaps are computed as `pick` computes them, and its picks are cut as the soup search will cut them."""

from __future__ import annotations

from copick_soup.data.coords import voxel_to_angstrom
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import ValRun, score, sweep
from copick_soup.ensemble.peaks import class_thresholds
from copick_soup.train.config import TrainConfig
from copick_soup.train.dataset import TrainVolume


def val_settings(cfg: TrainConfig, device: str) -> InferenceSettings:
    """As `pick` runs a member (OpenVINO on a CPU where it is installed, else torch), in cubes of `val_window`, or
    with 0 in the crop tiling `pick --window auto` would choose for this one member, so that the best checkpoint is
    the best in the windows it will be used with (a U-Net's heatmap depends on them:
    benchmarks/results/archive/tiling-diagnosis.md). Hard-negative mining runs the same way."""
    # OpenVINO converts the model anew for each validation, as the weights change between them (about 4 s for
    # unet3d_medium on 2 cores), which one pass over a run repays: 2.7x torch's speed per 64³ window there
    return InferenceSettings(window=cfg.val_window or None, device=device, amp=cfg.amp)


def volume_heatmaps(ensemble: Ensemble, volumes: list[TrainVolume], cfg: TrainConfig, device: str, progress=None):
    """Yield each (already normalised) training volume's whole (C, Z, Y, X) heatmap; `progress(n)` is called as
    each n windows are done."""
    settings = val_settings(cfg, device)
    for v in volumes:
        yield ensemble.heatmap(v.image, settings, stats=(0.0, 1.0), progress=progress)


def validate(model, volumes: list[TrainVolume], classes, cfg: TrainConfig, voxel_size: float, device: str,
             thresholds=None, progress=None):
    """(CZII Score, per-class thresholds) of the model on whole validation volumes.

    With `cfg.val_sweep` each class is cut at its own best threshold, as the soup search will cut it, so a
    class whose peaks are real but still faint counts. Otherwise, or when `thresholds` (a number or a dict by
    class) are given, e.g. a member's own on held-out runs, the peaks are cut there. `progress(n)`: called as each
    n windows are done."""
    ensemble = Ensemble.of_model(model.eval(), classes, voxel_size)
    val = []
    for v, heat in zip(volumes, volume_heatmaps(ensemble, volumes, cfg, device, progress)):
        truth = {c.name: voxel_to_angstrom(v.points[i], voxel_size) for i, c in enumerate(classes)}
        val.append(ValRun(v.run, [heat], truth))
    if thresholds is None and cfg.val_sweep:
        return sweep(ensemble, val, (1.0,))[::-1]
    fixed = dict(zip([c.name for c in classes],
                     class_thresholds(classes, cfg.val_threshold if thresholds is None else thresholds)))
    return score(ensemble, val, (1.0,), fixed), fixed
