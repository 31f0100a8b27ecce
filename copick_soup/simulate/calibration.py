"""Calibration windows for INT8 members (`pick --amp int8`): windows of simulated runs, one from each phantom
engine the default soup learnt from, made from fixed seeds so that every machine quantises a member alike.

Post-training quantisation needs inputs that exercise a network as real ones do, to set each activation's range;
the runs a user picks would do too, but picks would then depend on which run came first.
"""

from __future__ import annotations

import functools

import numpy as np

from copick_soup.data.tomogram import normalisation_stats
from copick_soup.objects import VOXEL_SIZE, classes_from_objects, czii_pickable_objects
from copick_soup.simulate.project import Engine, simulate_run, tilt_engine

SEED = 8100  # no recipe, test or other benchmark uses it
SHAPE = (96, 192, 192)
WINDOWS = 16  # per member, half from each run
SIDE = 64


@functools.lru_cache(maxsize=1)
def calibration_runs() -> tuple:
    """The two simulated runs (blobs, tilt), every tomogram type, in memory; made once per process."""
    objects = czii_pickable_objects()
    classes = classes_from_objects(objects)
    engines = [Engine(), tilt_engine(objects)]
    return tuple(simulate_run(SHAPE, classes, "experimental", np.random.default_rng(child), VOXEL_SIZE, 2.0,
                              engine=engine)
                 for child, engine in zip(np.random.SeedSequence(SEED).spawn(len(engines)), engines))


def calibration_windows(tomo_type: str, normalisation: str = "zscore") -> list[np.ndarray]:
    """WINDOWS (1, 1, SIDE, SIDE, SIDE) float32 windows of the calibration runs' `tomo_type` tomograms, normalised
    as a member with this `normalisation` normalises its input (data/tomogram.py)."""
    rng = np.random.default_rng(SEED)
    windows = []
    for run in calibration_runs():
        volume = run.tomograms[tomo_type]
        centre, scale = normalisation_stats(volume, normalisation)
        for _ in range(WINDOWS // 2):
            z, y, x = (int(rng.integers(0, n - SIDE + 1)) for n in volume.shape)
            block = volume[z:z + SIDE, y:y + SIDE, x:x + SIDE]
            windows.append(((block - centre) / scale).astype(np.float32)[None, None])
    return windows
