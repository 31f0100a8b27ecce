"""Regression targets: one Gaussian heatmap per class, built per patch from the picks.

Each particle is a Gaussian of peak 1 centred on its (fractional) voxel position, sigma = `sigma_scale` x its
radius in voxels. Overlapping particles of a class combine by maximum, so every peak stays at 1.
"""

from __future__ import annotations

import numpy as np


def class_sigmas(classes, voxel_size: float, sigma_scale: float) -> list[float]:
    return [max(sigma_scale * c.radius / voxel_size, 0.5) for c in classes]


def gaussian_heatmaps(points: list[np.ndarray], sigmas: list[float], origin, shape) -> np.ndarray:
    """(C, D, H, W) float32 heatmaps for a patch starting at voxel `origin` (z, y, x).

    `points[c]` holds class c's centres as (N, 3) voxel (z, y, x) in tomogram coordinates.
    """
    out = np.zeros((len(points), *shape), dtype=np.float32)
    origin = np.asarray(origin, dtype=np.float64)
    size = np.asarray(shape)
    for c, (pts, sigma) in enumerate(zip(points, sigmas)):
        reach = 3.0 * sigma
        local = np.asarray(pts, dtype=np.float64).reshape(-1, 3) - origin
        inside = np.all((local > -reach) & (local < size - 1 + reach), axis=1)
        for p in local[inside]:
            lo = np.maximum(np.floor(p - reach).astype(int), 0)
            hi = np.minimum(np.ceil(p + reach).astype(int) + 1, size)
            g = [np.exp(-0.5 * ((np.arange(lo[i], hi[i]) - p[i]) / sigma) ** 2).astype(np.float32) for i in range(3)]
            blob = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
            view = out[c, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            np.maximum(view, blob, out=view)
    return out

