"""The sample: particles, distractors, vesicles and fiducials placed without overlap in an ice slab.

Produces a clean density volume (Z, Y, X), protein positive, and the true particle centres in voxels. The
microscope (CTF, missing wedge, noise, reconstruction) is applied afterwards by `imaging`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from copick_soup.objects import FULL_SHAPE, ParticleClass
from copick_soup.simulate.profiles import Conditions
from copick_soup.simulate.shapes import Blobs, class_blobs, jittered, random_distractor

FULL_VOLUME = float(np.prod(FULL_SHAPE))
DEFAULT_PER_TOMOGRAM = 20  # particles of a class in a 184x630x630 tomogram when its metadata gives none


@dataclass
class Sample:
    density: np.ndarray  # (Z, Y, X) float32
    centers: dict = field(default_factory=dict)  # class name -> (N, 3) voxel (z, y, x)
    slab: tuple = (0, 0)  # z range of the ice


class Placer:
    """Rejection sampling of non-overlapping spheres (and vesicle shells) inside the slab."""

    def __init__(self, shape, slab, rng, tries: int = 60):
        self.shape, self.slab, self.rng, self.tries = shape, slab, rng, tries
        self.centers, self.radii, self.vesicles = [], [], []

    def _free(self, c: np.ndarray, r: float) -> bool:
        if self.centers:
            d = np.linalg.norm(np.asarray(self.centers) - c, axis=1)
            if np.any(d < 0.95 * (np.asarray(self.radii) + r)):
                return False
        return all(abs(np.linalg.norm(c - vc) - vr) > r + 3.0 for vc, vr in self.vesicles)

    def place(self, r: float):
        """A free centre for a sphere of radius r (voxels), or None after `tries` misses.

        Centres stay inside the volume (particles may be cut by its faces, as in real tomograms)."""
        lo_z, hi_z = self.slab[0] + r * 0.5, self.slab[1] - r * 0.5
        if hi_z <= lo_z:
            lo_z = hi_z = 0.5 * (self.slab[0] + self.slab[1])
        for _ in range(self.tries):
            c = np.array([self.rng.uniform(lo_z, hi_z),
                          self.rng.uniform(0, self.shape[1] - 1),
                          self.rng.uniform(0, self.shape[2] - 1)])
            if self._free(c, r):
                self.centers.append(c)
                self.radii.append(r)
                return c
        return None


def render_blobs(volume: np.ndarray, center: np.ndarray, blobs: Blobs, amplitude: float) -> None:
    """Add a particle to `volume` in place. Each blob is a separable Gaussian over the particle's box."""
    reach = blobs.extent
    lo = np.maximum(np.floor(center - reach).astype(int), 0)
    hi = np.minimum(np.ceil(center + reach).astype(int) + 1, volume.shape)
    if np.any(hi <= lo):
        return
    axes = [np.arange(lo[i], hi[i], dtype=np.float32) - np.float32(center[i]) for i in range(3)]
    box = np.zeros(tuple(hi - lo), dtype=np.float32)
    for (cz, cy, cx), s, w in zip(blobs.centers, blobs.sigmas, blobs.weights):
        k = np.float32(-0.5 / s**2)
        gz = np.exp(k * (axes[0] - cz) ** 2) * np.float32(w)
        gy = np.exp(k * (axes[1] - cy) ** 2)
        gx = np.exp(k * (axes[2] - cx) ** 2)
        box += gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += amplitude * box


def render_vesicle(volume: np.ndarray, center: np.ndarray, radius: float, amplitude: float) -> None:
    """A lipid bilayer sphere: two leaflets 4 nm apart, rendered slab by slab to bound memory."""
    reach = radius + 4.0
    lo = np.maximum(np.floor(center - reach).astype(int), 0)
    hi = np.minimum(np.ceil(center + reach).astype(int) + 1, volume.shape)
    if np.any(hi <= lo):
        return
    y = (np.arange(lo[1], hi[1], dtype=np.float32) - center[1])[:, None]
    x = (np.arange(lo[2], hi[2], dtype=np.float32) - center[2])[None, :]
    for z in range(lo[0], hi[0]):
        r = np.sqrt((z - center[0]) ** 2 + y**2 + x**2) - radius
        volume[z, lo[1]:hi[1], lo[2]:hi[2]] += amplitude * (np.exp(-0.5 * (r - 2) ** 2) + np.exp(-0.5 * (r + 2) ** 2))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    return Rotation.random(random_state=rng).as_matrix()


def poisson_count(per_tomogram: float, sample_volume: float, rng: np.random.Generator) -> int:
    """Counts scale with the sample volume; a 184x630x630 tomogram with a 70% slab is the reference."""
    reference = FULL_VOLUME * 0.7
    return int(rng.poisson(per_tomogram * sample_volume / reference))


def ice_with_vesicles(shape, cond: Conditions, rng: np.random.Generator, vesicle_contrast=(0.6, 1.0)):
    """(empty volume, slab z range, placer, the slab's volume in voxels) with the run's lipid vesicles drawn in."""
    nz = shape[0]
    thickness = max(int(round(cond.slab * nz)), 8)
    z0 = int(rng.integers(0, nz - thickness + 1))
    slab = (z0, z0 + thickness)
    sample_volume = thickness * shape[1] * shape[2]
    volume = np.zeros(shape, dtype=np.float32)
    placer = Placer(shape, slab, rng)
    for _ in range(poisson_count(cond.vesicles, sample_volume, rng)):
        radius = rng.uniform(20.0, 60.0)  # voxels: 20-60 nm vesicles
        center = np.array([rng.uniform(*slab), rng.uniform(0, shape[1]), rng.uniform(0, shape[2])])
        placer.vesicles.append((center, radius))
        render_vesicle(volume, center, radius, amplitude=rng.uniform(*vesicle_contrast))
    return volume, slab, placer, sample_volume


def particle_jobs(classes, cond: Conditions, sample_volume: float, rng: np.random.Generator) -> list[tuple]:
    """[(kind, class or None)]: every particle, distractor and fiducial to place in one run."""
    jobs = []
    for cls in classes:
        per_tomogram = cls.simulation.get("per_tomogram", DEFAULT_PER_TOMOGRAM)
        jobs += [("class", cls)] * poisson_count(per_tomogram * cond.crowding, sample_volume, rng)
    jobs += [("distractor", None)] * poisson_count(cond.distractors, sample_volume, rng)
    jobs += [("fiducial", None)] * poisson_count(cond.fiducials, sample_volume, rng)
    return jobs


def build_sample(shape, classes: list[ParticleClass], cond: Conditions, voxel_size: float,
                 rng: np.random.Generator) -> Sample:
    """Place and render everything for one run."""
    volume, slab, placer, sample_volume = ice_with_vesicles(shape, cond, rng)
    # Big things first: rejection sampling fills gaps with small ones more easily than the reverse.
    jobs = particle_jobs(classes, cond, sample_volume, rng)
    radii = {c.name: c.radius / voxel_size for c in classes}
    canon = {c.name: class_blobs(c.name, radii[c.name], c.simulation) for c in classes}
    sizes = [radii[c.name] if kind == "class" else 0.0 for kind, c in jobs]
    order = np.argsort(sizes, kind="stable")[::-1]

    centers = {c.name: [] for c in classes}
    for idx in order:
        kind, cls = jobs[idx]
        if kind == "class":
            r = radii[cls.name]
            blobs = jittered(canon[cls.name], r, cond.shape_jitter, rng)
            amplitude = cond.contrast * rng.uniform(0.85, 1.15)
        elif kind == "distractor":
            r = rng.uniform(4.0, 15.0)
            blobs = random_distractor(r, rng)
            amplitude = rng.uniform(0.5, 1.2)
        else:  # gold fiducial: small, very dense
            r = rng.uniform(4.0, 6.0)
            blobs = Blobs(np.zeros((1, 3)), np.array([r * 0.6]), np.ones(1))
            amplitude = rng.uniform(6.0, 10.0)
        center = placer.place(r)
        if center is None:
            continue
        render_blobs(volume, center, blobs.rotated(random_rotation(rng)), amplitude)
        if kind == "class":
            centers[cls.name].append(center)

    volume[slab[0]:slab[1]] += np.float32(cond.ice)
    return Sample(volume, {k: np.asarray(v, dtype=np.float64).reshape(-1, 3) for k, v in centers.items()}, slab)
