"""The `sart` engine's sample: pseudo-atomic complexes (assemblies.py) splatted onto the grid, in an ice slab with
its own contaminants.

What differs from the other engines' samples, and why:
- particles are point clouds with masses assembled from each complex's architecture, every particle a variant
  (assemblies.particle), not Gaussian blobs (`blobs`) nor one deposited map per class (`tilt`);
- density is made by trilinear splatting of every pseudo-atom's mass, then one Gaussian low-pass whose width is the
  run's B-factor (sigma^2 = B / 8 pi^2) plus the grid's own, instead of rendering each particle's blobs or resampling
  a template map;
- the clutter is other than the vesicles, gold and look-alike maps of both other engines: unlabelled assemblies of
  other point groups, crystalline ice (dark in every image, darker at the tilts where it diffracts; kept apart as an
  amplitude object, see sirt.py), a carbon support edge across part of the field, and amorphous ice as a correlated
  random density field filling the slab, whose projection thickens with the tilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from copick_soup.simulate.assemblies import Architecture, canonical, distractor, particle
from copick_soup.simulate.phantom import Placer, poisson_count, random_rotation
from copick_soup.simulate.profiles import Conditions

PROTEIN_DA_PER_A3 = 0.81  # a voxel full of protein is one density unit


@dataclass
class PseudoAtomicSample:
    density: np.ndarray  # (Z, Y, X) float32, protein ~1 above the ice; carbon and the amorphous-ice field included
    crystals: np.ndarray  # (Z, Y, X) float32, crystalline ice (an amplitude object, imaged apart)
    centers: dict  # class name -> (N, 3) voxel (z, y, x)
    slab: tuple  # z range of the ice


def splat(volume: np.ndarray, points: np.ndarray, weights: np.ndarray) -> None:
    """Add each point's weight to `volume` (in place), shared trilinearly among the 8 voxels around it."""
    base = np.floor(points).astype(np.int64)
    frac = points - base
    shape = np.array(volume.shape)
    flat = volume.reshape(-1)
    for corner in np.ndindex(2, 2, 2):
        idx = base + corner
        w = weights * np.prod(np.where(corner, frac, 1 - frac), axis=1)
        inside = np.all((idx >= 0) & (idx < shape), axis=1)
        linear = np.ravel_multi_index(idx[inside].T, volume.shape)
        flat += np.bincount(linear, w[inside], minlength=flat.size).astype(np.float32)


def build_pseudoatomic_sample(shape, classes, architectures: dict[str, Architecture], cond: Conditions,
                              extra: dict, voxel_size: float, rng: np.random.Generator) -> PseudoAtomicSample:
    """Place, vary and render every particle and contaminant of one run; `extra` holds the engine's own draws."""
    nz = shape[0]
    thickness = max(int(round(cond.slab * nz)), 8)
    z0 = int(rng.integers(0, nz - thickness + 1))
    slab = (z0, z0 + thickness)
    sample_volume = thickness * shape[1] * shape[2]
    placer = Placer(shape, slab, rng)
    models = {c.name: canonical(architectures[c.name]) for c in classes}

    jobs = [c for c in classes for _ in range(poisson_count(c.simulation.get("per_tomogram", 20) * cond.crowding,
                                                            sample_volume, rng))]
    jobs.sort(key=lambda c: -c.radius)  # big ones first: small ones fill the gaps
    jobs += [None] * poisson_count(cond.distractors, sample_volume, rng)
    points, masses, centers = [], [], {c.name: [] for c in classes}
    for cls in jobs:
        if cls is None:
            atoms, mass = distractor(rng)
            radius = np.percentile(np.linalg.norm(atoms, axis=1), 95)
        else:
            atoms, mass = particle(architectures[cls.name], models[cls.name], cls.radius, rng)
            radius = cls.radius
        center = placer.place(0.9 * radius / voxel_size)
        if center is None:
            continue
        points.append(atoms @ random_rotation(rng).T / voxel_size + center)
        masses.append(mass)
        if cls is not None:
            centers[cls.name].append(center)

    density = np.zeros(shape, dtype=np.float32)
    if points:
        splat(density, np.concatenate(points), np.concatenate(masses) / (PROTEIN_DA_PER_A3 * voxel_size**3))
    sigma = np.sqrt(extra["b_factor"] / (8 * np.pi**2) + (0.5 * voxel_size) ** 2) / voxel_size
    density = gaussian_filter(density, sigma)
    density[slab[0]:slab[1]] += amorphous_ice(shape, slab, extra["ice_field"], rng)
    if extra["carbon_edge"]:
        carbon_edge(density, slab, rng)
    crystals = ice_crystals(shape, slab, int(rng.poisson(extra["ice_crystals"])), placer, rng)
    return PseudoAtomicSample(density, crystals, {k: np.asarray(v, dtype=np.float64).reshape(-1, 3)
                                                  for k, v in centers.items()}, slab)


def amorphous_ice(shape, slab, amplitude: float, rng) -> np.ndarray:
    """Density fluctuations of vitreous ice: white noise correlated over ~1-2 voxels (10-20 Å), `amplitude` std."""
    field = gaussian_filter(rng.standard_normal((slab[1] - slab[0], shape[1], shape[2]), dtype=np.float32),
                            rng.uniform(0.8, 1.6))
    return (field * np.float32(amplitude / (field.std() + 1e-12))).astype(np.float32)


def carbon_edge(density: np.ndarray, slab, rng) -> None:
    """A carbon support film (~15-30 nm, denser than protein) over the slab's top face beyond a straight edge
    crossing the field at a random angle (in place)."""
    ny, nx = density.shape[1:]
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:ny, 0:nx]
    across = (y - ny / 2) * np.sin(angle) + (x - nx / 2) * np.cos(angle) - rng.uniform(-0.4, 0.4) * max(ny, nx)
    film = 1 / (1 + np.exp(-across / 1.5))  # a soft edge, one or two voxels wide
    depth = int(rng.integers(2, 4))
    top = max(slab[0] - depth, 0)
    density[top:top + depth] += (rng.uniform(1.2, 1.8) * film).astype(np.float32)[None]


def ice_crystals(shape, slab, count: int, placer: Placer, rng) -> np.ndarray:
    """Crystalline ice: flattened ellipsoids 40-120 Å across, placed where nothing else is."""
    crystals = np.zeros(shape, dtype=np.float32)
    for _ in range(count):
        radius = rng.uniform(2.0, 6.0)
        center = placer.place(radius)
        if center is None:
            continue
        axes = radius * np.array([rng.uniform(0.3, 0.6), 1.0, rng.uniform(0.7, 1.0)])
        rotation = random_rotation(rng)
        reach = int(np.ceil(radius)) + 1
        lo = np.maximum(np.floor(center).astype(int) - reach, 0)
        hi = np.minimum(np.floor(center).astype(int) + reach + 1, shape)
        g = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1) - center
        r = np.linalg.norm((g @ rotation) / axes, axis=-1)
        crystals[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += np.clip(3 * (1 - r), 0, 1).astype(np.float32)
    return crystals
