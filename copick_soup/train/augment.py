"""Training augmentation: the same random flips and in-plane rot90 on image and targets, intensity noise on
the image alone. In-plane only, because the missing wedge makes z different from x and y.

`Randomisation` widens what a network sees beyond what one simulator makes (the cross-engine gap is the reason):
particle size, blur, the colour of the noise, a monotone intensity non-linearity, a smooth contrast field, so
that neighbouring particles differ in contrast as they do across a real lamella, and the share of low spatial
frequencies (`spectrum`): how much of a particle's bulk contrast an imaging and reconstruction chain keeps against
its edges. The engines differ most there: one engine's hollow apo-ferritin is a dark ring with a bright centre and
halo (CTF fringes, a high-passing back-projection), another's a thin dark ring on a flat background (an iterative
reconstruction keeps the low frequencies). Each is off at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft
from scipy.ndimage import gaussian_filter, zoom


@dataclass(frozen=True)
class Randomisation:
    scale: float = 0.0  # particles (and their targets) zoomed by 1 ± up to this
    blur: float = 0.0  # half the time, a Gaussian blur of up to this sigma (voxels)
    noise_colour: float = 0.0  # added noise smoothed by up to this sigma: white to blotchy
    gamma: float = 0.0  # sign(x) |x|^g with g drawn in [1 / (1 + gamma), 1 + gamma]
    contrast: float = 0.0  # a smooth multiplicative field 1 ± up to this, a few particles wide
    spectrum: float = 0.0  # half the time, low frequencies scaled by exp(± up to this) (`low_frequency_gain`)


def crop_side(patch: int, randomisation: Randomisation, rng: np.random.Generator) -> int:
    """The side of the crop that, zoomed to `patch`, scales particles by a random factor."""
    if not randomisation.scale:
        return patch
    return int(round(patch / rng.uniform(1 - randomisation.scale, 1 + randomisation.scale)))


def zoom_to(image: np.ndarray, patch: int) -> tuple[np.ndarray, float]:
    """(a Q^3 crop zoomed to `patch`^3, the factor that maps crop coordinates to patch coordinates). scipy's zoom
    keeps the corners: crop voxel i lands on patch voxel i (P - 1) / (Q - 1). Targets are drawn afresh at the mapped
    positions rather than zoomed, so their peaks stay at 1."""
    if image.shape[0] == patch:
        return image, 1.0
    return zoom(image, patch / image.shape[0], order=1), (patch - 1) / (image.shape[0] - 1)


def augment(image: np.ndarray, target: np.ndarray, rng: np.random.Generator, intensity: float = 0.1,
            randomisation: Randomisation | None = None):
    """image (D, H, W), target (C, D, H, W) -> augmented copies of both."""
    randomisation = randomisation or Randomisation()
    for axis in range(3):
        if rng.random() < 0.5:
            image, target = np.flip(image, axis), np.flip(target, axis + 1)
    k = int(rng.integers(4))
    image, target = np.rot90(image, k, axes=(1, 2)), np.rot90(target, k, axes=(2, 3))
    image = randomise(np.asarray(image, dtype=np.float32), randomisation, rng)
    image = image * rng.uniform(1 - intensity, 1 + intensity) + rng.normal(0, intensity)
    image = image + rng.normal(0, rng.uniform(0, intensity), size=image.shape)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(target)


def randomise(image: np.ndarray, r: Randomisation, rng: np.random.Generator) -> np.ndarray:
    """The image-only randomisations, in the order a microscope and a processing pipeline would apply them."""
    if r.contrast:
        field = gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), 12.0)
        image = image * (1 + r.contrast * np.clip(field / (field.std() + 1e-12), -2, 2) / 2)
    if r.spectrum and rng.random() < 0.5:
        image = low_frequency_gain(image, np.exp(rng.uniform(-r.spectrum, r.spectrum)), rng.uniform(1 / 30, 1 / 10))
    if r.blur and rng.random() < 0.5:
        image = gaussian_filter(image, rng.uniform(0, r.blur))
    if r.noise_colour:
        noise = gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), rng.uniform(0, r.noise_colour))
        image = image + rng.uniform(0, 0.5) * noise / (noise.std() + 1e-12)
    if r.gamma:
        g = np.exp(rng.uniform(-np.log1p(r.gamma), np.log1p(r.gamma)))
        image = np.sign(image) * np.abs(image) ** g
    return image.astype(np.float32, copy=False)


def low_frequency_gain(image: np.ndarray, gain: float, cutoff: float) -> np.ndarray:
    """`image` with its spatial frequencies below about `cutoff` (cycles per voxel) scaled by `gain`, the rest kept:
    the transfer 1 + (gain - 1) exp(-(k / cutoff)^2). A gain below 1 high-passes (halos, fringes), above 1 keeps
    more of the bulk (blobby). The standard deviation is restored, so the intensity scale stays the sampler's."""
    k2 = sum(np.meshgrid(*(fft.fftfreq(n) ** 2 for n in image.shape[:-1]), fft.rfftfreq(image.shape[-1]) ** 2,
                         indexing="ij", sparse=True))
    transfer = 1 + (gain - 1) * np.exp(-k2 / cutoff**2)
    out = fft.irfftn(fft.rfftn(image) * transfer, s=image.shape).astype(np.float32)
    return out * (image.std() / (out.std() + 1e-12))
