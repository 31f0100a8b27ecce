"""The `tilt` engine's sample: each particle is its complex's density (a template computed from an atomic model,
templates/), randomly rotated, slightly deformed (conformational jitter), placed without overlap in an ice slab
among lipid membranes, gold fiducials and unlabelled complexes; some of those are look-alikes (a target's density
at another size, smoothed), so that size and blobness alone do not name a class.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import affine_transform, gaussian_filter

from copick_soup.simulate.phantom import Sample, ice_with_vesicles, particle_jobs, random_rotation
from copick_soup.simulate.profiles import Conditions
from copick_soup.simulate.templates import Template

UNIT = 20.0  # template densities peak near 20 of their units; particles here peak near 1, like membranes


def render_template(volume: np.ndarray, center: np.ndarray, density: np.ndarray, transform: np.ndarray,
                    amplitude: float) -> None:
    """Add `density` to `volume` in place, centred at `center` (voxels, fractional), mapped by the 3x3 `transform`
    (rotation times deformation) about the template's centre."""
    reach = int(np.ceil(0.5 * max(density.shape) * np.sqrt(3) * np.linalg.norm(transform, 2))) + 1
    lo = np.floor(center).astype(int) - reach
    size = 2 * reach + 1
    inverse = np.linalg.inv(transform)
    box_center = np.floor(center) - lo  # the box voxel holding the centre's integer part
    offset = (np.asarray(density.shape) - 1) / 2 - inverse @ (box_center + (center - np.floor(center)))
    box = affine_transform(density, inverse, offset=offset, output_shape=(size,) * 3, order=1, cval=0.0)
    src = [slice(max(-lo[i], 0), size - max(lo[i] + size - volume.shape[i], 0)) for i in range(3)]
    dst = [slice(max(lo[i], 0), min(lo[i] + size, volume.shape[i])) for i in range(3)]
    if all(s.stop > s.start for s in dst):
        volume[tuple(dst)] += np.float32(amplitude) * box[tuple(src)]


def deformation(jitter: float, rng: np.random.Generator) -> np.ndarray:
    """A near-identity linear map: anisotropic stretch of up to `jitter` along random axes (conformational and
    size variability of one complex)."""
    axes = random_rotation(rng)
    return axes @ np.diag(1 + rng.uniform(-jitter, jitter, 3)) @ axes.T


def build_templated_sample(shape, classes, templates: dict[str, Template], distractors: list[Template],
                           cond: Conditions, voxel_size: float, rng: np.random.Generator) -> Sample:
    """Place and render everything for one run; `templates` maps class names to their densities."""
    volume, slab, placer, sample_volume = ice_with_vesicles(shape, cond, rng, vesicle_contrast=(0.5, 1.0))
    jobs = particle_jobs(classes, cond, sample_volume, rng)
    sizes = [c.radius / voxel_size if kind == "class" else 0.0 for kind, c in jobs]
    centers = {c.name: [] for c in classes}
    for idx in np.argsort(sizes, kind="stable")[::-1]:  # big things first: small ones fill the gaps
        kind, cls = jobs[idx]
        rotation = random_rotation(rng)
        if kind == "class":
            density, radius = templates[cls.name].density, cls.radius / voxel_size
            transform = rotation @ deformation(cond.shape_jitter * 0.5, rng)
            amplitude = cond.contrast * rng.uniform(0.85, 1.15) / UNIT
        elif kind == "distractor":
            density, scale = look_alike(distractors, templates, rng)
            radius = 0.45 * max(density.shape) * scale
            transform = rotation @ (scale * deformation(0.1, rng))
            amplitude = rng.uniform(0.6, 1.2) / UNIT
        else:  # gold fiducial: small, very dense
            radius = rng.uniform(4.0, 6.0)
            center = placer.place(radius)
            if center is not None:
                render_template(volume, center, gold(radius), np.eye(3), rng.uniform(6.0, 10.0))
            continue
        center = placer.place(radius)
        if center is None:
            continue
        render_template(volume, center, density, transform, amplitude)
        if kind == "class":
            centers[cls.name].append(center)
    volume[slab[0]:slab[1]] += np.float32(cond.ice)
    return Sample(volume, {k: np.asarray(v, dtype=np.float64).reshape(-1, 3) for k, v in centers.items()}, slab)


def look_alike(distractors: list[Template], templates: dict[str, Template], rng) -> tuple[np.ndarray, float]:
    """(density, scale) of an unlabelled complex: a non-target, or a target's density at 0.6-0.8 or 1.25-1.4 of
    its size and smoothed, which no class should claim."""
    if rng.random() < 0.5 or not templates:
        return distractors[int(rng.integers(len(distractors)))].density, rng.uniform(0.8, 1.6)
    chosen = list(templates.values())[int(rng.integers(len(templates)))]
    scale = rng.uniform(0.6, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.4)
    return gaussian_filter(chosen.density, rng.uniform(0.5, 1.5)), scale


def gold(radius: float) -> np.ndarray:
    half = int(np.ceil(radius)) + 2
    g = np.indices((2 * half + 1,) * 3) - half
    return (np.sqrt((g**2).sum(0)) <= radius).astype(np.float32)
