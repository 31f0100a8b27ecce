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
    """Cubes of `val_window`, or with 0 the crop tiling `pick --window auto` would choose for this one member, so
    that the best checkpoint is the best in the windows it will be used with (a U-Net's heatmap depends on them:
    benchmarks/results/archive/tiling-diagnosis.md)."""
    # torch: the weights change between validations, and OpenVINO would convert the model again for each
    return InferenceSettings(window=cfg.val_window or None, device=device, amp=cfg.amp, runtime="torch")


def volume_heatmaps(ensemble: Ensemble, volumes: list[TrainVolume], cfg: TrainConfig, device: str):
    """Yield each (already z-scored) training volume's whole (C, Z, Y, X) heatmap."""
    settings = val_settings(cfg, device)
    for v in volumes:
        yield ensemble.heatmap(v.image, settings, stats=(0.0, 1.0))


def validate(model, volumes: list[TrainVolume], classes, cfg: TrainConfig, voxel_size: float, device: str,
             thresholds=None):
    """(CZII Score, per-class thresholds) of the model on whole validation volumes.

    With `cfg.val_sweep` each class is cut at its own best threshold, as the soup search will cut it, so a
    class whose peaks are real but still faint counts. Otherwise, or when `thresholds` (a number or a dict by
    class) are given, e.g. a member's own on held-out runs, the peaks are cut there."""
    ensemble = Ensemble.of_model(model.eval(), classes, voxel_size)
    val = []
    for v, heat in zip(volumes, volume_heatmaps(ensemble, volumes, cfg, device)):
        truth = {c.name: voxel_to_angstrom(v.points[i], voxel_size) for i, c in enumerate(classes)}
        val.append(ValRun(v.run, [heat], truth))
    if thresholds is None and cfg.val_sweep:
        return sweep(ensemble, val, (1.0,))[::-1]
    fixed = dict(zip([c.name for c in classes],
                     class_thresholds(classes, cfg.val_threshold if thresholds is None else thresholds)))
    return score(ensemble, val, (1.0,), fixed), fixed
