"""Particle densities as sums of isotropic Gaussian blobs.

Blobs make rotation free (rotate the centres, not a voxel grid) and rendering separable. A class gets its
shape from its copick metadata (`simulation.shape`): a hollow "shell" of subunits (apo-ferritin, virus-like
particles) or a compact cluster of "lobes" (everything else, and any class a lab adds). The lobe layout is
seeded by the class name, so a class looks the same in every run and every process, and then jittered per
run and per particle, so no two copies are identical.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Blobs:
    centers: np.ndarray  # (M, 3) voxels, (z, y, x), relative to the particle centre
    sigmas: np.ndarray  # (M,) voxels
    weights: np.ndarray  # (M,)

    def rotated(self, rotation: np.ndarray) -> Blobs:
        return Blobs(self.centers @ rotation.T, self.sigmas, self.weights)

    @property
    def extent(self) -> float:
        """Radius (voxels) beyond which the density is negligible."""
        return float(np.max(np.linalg.norm(self.centers, axis=1) + 3 * self.sigmas))


def class_rng(name: str) -> np.random.Generator:
    """A generator fixed by the class name alone (crc32, unlike hash(), is the same in every process)."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def fibonacci_sphere(n: int) -> np.ndarray:
    """n roughly evenly spaced unit vectors."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], axis=1)


def shell_blobs(radius: float, subunits: int) -> Blobs:
    """A hollow shell of `subunits` blobs whose outer edge sits at `radius` voxels."""
    spacing = np.sqrt(4 * np.pi / subunits)  # on the unit sphere
    shell = radius / (1 + 1.2 * spacing * 0.45)
    sigma = max(0.45 * spacing * shell, 0.8)
    centers = fibonacci_sphere(subunits) * shell
    return Blobs(centers, np.full(subunits, sigma), np.ones(subunits))


def lobe_blobs(name: str, radius: float, subunits: int) -> Blobs:
    """A compact cluster of `subunits` lobes plus smaller detail blobs, laid out by the class name."""
    rng = class_rng(name)
    n = max(int(subunits), 1)
    sizes = rng.uniform(0.7, 1.0, n)
    sizes /= sizes.max()
    lobe_sigma = radius * 0.45 / n ** (1 / 3) * sizes
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # A Gaussian looks about 1.7 sigma wide, so this puts the visible edge of each lobe near `radius`.
    reach = np.clip(radius - 1.7 * lobe_sigma, 0.0, None) * (0.9 if n > 1 else 0.0)
    centers = directions * reach[:, None]
    details = rng.normal(size=(2 * n, 3)) * radius * 0.35
    detail_sigma = np.full(2 * n, radius * 0.16)
    return Blobs(
        np.concatenate([centers, details]),
        np.concatenate([lobe_sigma, detail_sigma]),
        np.concatenate([np.ones(n), np.full(2 * n, 0.6)]),
    )


def class_blobs(name: str, radius: float, simulation: dict) -> Blobs:
    """The canonical blob model of a class, `radius` in voxels."""
    shape = simulation.get("shape", "lobes")
    subunits = int(simulation.get("subunits", 24 if shape == "shell" else 3))
    if shape == "shell":
        return shell_blobs(radius, subunits)
    if shape == "lobes":
        return lobe_blobs(name, radius, subunits)
    raise ValueError(f"object '{name}': unknown simulation shape '{shape}' (use 'shell' or 'lobes')")


def jittered(blobs: Blobs, radius: float, jitter: float, rng: np.random.Generator) -> Blobs:
    """A copy with blob centres moved by `jitter * radius` (voxels, Gaussian) and sizes varied by ~10%."""
    centers = blobs.centers + rng.normal(scale=jitter * radius, size=blobs.centers.shape)
    sigmas = blobs.sigmas * rng.uniform(0.9, 1.1, size=blobs.sigmas.shape)
    return Blobs(centers, sigmas, blobs.weights)


def random_distractor(radius: float, rng: np.random.Generator) -> Blobs:
    """An unlabelled particle: a random cluster of 1-8 blobs."""
    n = int(rng.integers(1, 9))
    sigma = radius * rng.uniform(0.2, 0.45, n)
    centers = rng.normal(size=(n, 3)) * radius * 0.35
    return Blobs(centers, sigma, rng.uniform(0.5, 1.2, n))
