"""Hard negatives: places where the model being trained sees a particle that the annotations do not have.

Particles fill well under 1% of a tomogram, so patches centred on particles plus a few random ones rarely
show the network what fools it: unlabelled complexes, contamination, look-alikes of another class. With
`p_hard` > 0 the loop runs the model over its training volumes at the start and every `hard_every` steps, and
keeps each peak above `hard_threshold` that lies farther than a particle radius from every annotated particle
of its class; that share of patches is then centred on one of them. Only the annotations are needed, so a
lab's own runs are mined the same way as phantoms.
"""

from __future__ import annotations

import numpy as np

from copick_soup.data.coords import angstrom_to_voxel
from copick_soup.ensemble import Ensemble
from copick_soup.train.validation import volume_heatmaps


def false_peaks(peaks: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """The (N, 3) voxel peaks farther than `radius` voxels from every (M, 3) voxel truth point."""
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1, 3)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 3)
    if not len(truth) or not len(peaks):
        return peaks
    distance = np.linalg.norm(peaks[:, None, :] - truth[None, :, :], axis=2).min(axis=1)
    return peaks[distance > radius]


def mine_negatives(net, volumes, classes, cfg, voxel_size: float, device: str, progress=None) -> list[np.ndarray]:
    """Per training volume, the (N, 3) voxel (z, y, x) centres of the net's false peaks, all classes together.
    The net runs as validation runs it (validation.py: as `pick` does); `progress(n)` sees each n windows."""
    ensemble = Ensemble.of_model(net.eval(), classes, voxel_size)
    mined = []
    for volume, heat in zip(volumes, volume_heatmaps(ensemble, volumes, cfg, device, progress)):
        picks = ensemble.picks(heat, cfg.hard_threshold)
        found = [false_peaks(angstrom_to_voxel(picks[c.name][0], voxel_size), volume.points[i],
                             c.radius / voxel_size) for i, c in enumerate(classes)]
        mined.append(np.concatenate(found))
    return mined
