"""Training volumes from copick runs, and random patches biased towards particles.

Tomograms are loaded whole and normalised once (training revisits every voxel many times; a 184x630x630
tomogram is 290 MB). Bad runs are skipped with a warning that names them, so one broken run does not stop a
training job: runs without picks, and tomograms with NaN values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from copick_soup.data import angstrom_to_voxel, open_tomogram, read_picks
from copick_soup.data.kinds import match_tomogram
from copick_soup.data.tomogram import available_tomo_types, normalisation_stats
from copick_soup.errors import SoupError
from copick_soup.train.augment import Randomisation, augment, crop_side, zoom_to
from copick_soup.train.targets import class_sigmas, gaussian_heatmaps

log = logging.getLogger("copick_soup.train")


@dataclass
class TrainVolume:
    run: str
    tomo_type: str
    image: np.ndarray  # (Z, Y, X) float32, normalised (z-score or robust: data/tomogram.py)
    points: list  # per class, (N, 3) voxel (z, y, x)


def load_volumes(root, runs, tomo_types, classes, voxel_size: float, picks_user: str,
                 picks_session: str | None, warn=log.warning, normalisation: str = "zscore") -> list[TrainVolume]:
    """One TrainVolume per (run, tomogram type), normalised as `normalisation` says (data/tomogram.py); runs
    without picks, without that type or with NaNs are skipped with a warning."""
    names = [c.name for c in classes]
    volumes = []
    for run in runs:
        picks = read_picks(run, names, picks_user, picks_session)
        if sum(len(p) for p in picks.values()) == 0:
            warn(f"run {run.name}: no picks by user '{picks_user}' session '{picks_session}'; skipped")
            continue
        for tomo_type in tomo_types:
            loaded = load_image(run, voxel_size, tomo_type, normalisation, warn)
            if loaded is not None:
                image, grid = loaded  # a grid of 10.000 Å read as 10.012: the picks land with its own spacing
                volumes.append(TrainVolume(run.name, tomo_type, image, [angstrom_to_voxel(picks[n], grid)
                                                                        for n in names]))
    return volumes


def load_image(run, voxel_size: float, tomo_type: str, normalisation: str,
               warn=log.warning) -> tuple[np.ndarray, float] | None:
    """(a run's whole tomogram of a member's type, normalised; the spacing of its grid in Å). The tomogram is the
    run's of that kind (data/kinds.py: `denoised` reads a portal run's `wbp-denoised-denoiset-ctfdeconv`). None,
    with a warning, if the run has none or it holds NaNs."""
    name = match_tomogram(tomo_type, available_tomo_types(run, voxel_size))[0]
    if name is None:
        warn(f"run {run.name}: no '{tomo_type}' tomogram at {voxel_size:g} Å; skipped for that type")
        return None
    volume = open_tomogram(run, voxel_size, name)
    image = np.asarray(volume[:], dtype=np.float32)
    if not np.isfinite(image).all():
        warn(f"run {run.name}: tomogram '{name}' has NaN or infinite values; skipped")
        return None
    centre, scale = normalisation_stats(image, normalisation)
    image -= centre
    image /= scale
    return image, volume.voxel_size


class PatchSampler:
    """Random (image, target) patches; with probability `p_particle` a patch is centred near a particle of a
    class drawn uniformly (so rare classes are seen as often as common ones). Once `negatives` are set (per
    volume, (N, 3) voxel centres of the model's false peaks, see negatives.py), a `p_hard` share of patches is
    centred near one of them first."""

    def __init__(self, volumes: list[TrainVolume], classes, patch: int, voxel_size: float, sigma_scale: float,
                 rng: np.random.Generator, p_particle: float = 0.8, augment_data: bool = True,
                 p_hard: float = 0.0, randomisation: Randomisation | None = None):
        if not volumes:
            raise SoupError("no training data: every run was skipped or none was given")
        for v in volumes:
            if min(v.image.shape) < patch:
                raise SoupError(f"run {v.run}: patch {patch} is larger than its tomogram {v.image.shape}; use a "
                                f"smaller --patch")
        self.volumes, self.patch, self.rng = volumes, patch, rng
        self.sigmas = class_sigmas(classes, voxel_size, sigma_scale)
        self.p_particle, self.augment_data, self.p_hard = p_particle, augment_data, p_hard
        self.randomisation = randomisation or Randomisation()
        self.negatives = [np.zeros((0, 3))] * len(volumes)

    def origin(self, index: int, side: int | None = None) -> np.ndarray:
        """The corner of a crop of `side` (the patch by default) in volume `index`."""
        side = side or self.patch
        volume, negatives = self.volumes[index], self.negatives[index]
        shape = np.asarray(volume.image.shape)
        present = [c for c, pts in enumerate(volume.points) if len(pts)]
        if len(negatives) and self.rng.random() < self.p_hard:
            start = self.around(negatives, side)
        elif present and self.rng.random() < self.p_particle:
            start = self.around(volume.points[int(self.rng.choice(present))], side)
        else:
            start = np.array([self.rng.integers(0, s - side + 1) for s in shape])
        return np.clip(start, 0, shape - side)

    def around(self, points: np.ndarray, side: int) -> np.ndarray:
        """The corner of a crop whose centre is one of `points`, shifted by up to 30% of the crop."""
        centre = points[int(self.rng.integers(len(points)))] + self.rng.uniform(-0.3, 0.3, 3) * side
        return np.round(centre - side / 2).astype(int)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """image (1, P, P, P), target (C, P, P, P), P the patch side."""
        side = self.patch
        index = int(self.rng.integers(len(self.volumes)))
        volume = self.volumes[index]
        q = side
        if self.augment_data:  # a crop that, zoomed to the patch, makes particles larger or smaller
            q = min(crop_side(side, self.randomisation, self.rng), *volume.image.shape)
        z, y, x = self.origin(index, q)
        image, factor = zoom_to(volume.image[z:z + q, y:y + q, x:x + q], side)
        points = [(np.asarray(p, dtype=np.float64).reshape(-1, 3) - (z, y, x)) * factor for p in volume.points]
        target = gaussian_heatmaps(points, [s * factor for s in self.sigmas], (0, 0, 0), (side,) * 3)
        if self.augment_data:
            image, target = augment(image, target, self.rng, randomisation=self.randomisation)
        return image[None].copy(), target

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """images and targets of `size` patches, stacked."""
        samples = [self.sample() for _ in range(size)]
        return np.stack([a for a, _ in samples]), np.stack([t for _, t in samples])
