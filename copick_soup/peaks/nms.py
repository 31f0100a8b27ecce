"""Per-class local maxima by max-pool non-maximum suppression, refined to sub-voxel positions.

A voxel is a peak when it equals the maximum of its cube of side 2 * round(nms_scale * radius) + 1 and
exceeds the class threshold. Its position is then refined by the intensity centroid of its 3x3x3
neighbourhood, which recovers the fraction of a voxel a particle centre sits off the grid.
"""

from __future__ import annotations

import numpy as np

from copick_soup.data.coords import voxel_to_angstrom


def find_peaks(heatmap: np.ndarray, radius_vox: float, threshold: float, nms_scale: float = 0.5):
    """((N, 3) fractional voxel (z, y, x), (N,) scores) of one class's heatmap (Z, Y, X), strongest first."""
    import torch
    import torch.nn.functional as F

    h = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    r = max(int(round(nms_scale * radius_vox)), 1)
    pooled = F.max_pool3d(h, kernel_size=2 * r + 1, stride=1, padding=r)
    mask = (h == pooled) & (h > threshold)
    idx = mask[0, 0].nonzero().numpy()
    scores = heatmap[tuple(idx.T)].astype(np.float64) if len(idx) else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    idx, scores = idx[order], scores[order]
    return refine(heatmap, idx), scores


def refine(heatmap: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sub-voxel positions: the centroid of max(h - floor, 0) in each peak's 3x3x3 neighbourhood."""
    out = idx.astype(np.float64)
    shape = np.asarray(heatmap.shape)
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for n, p in enumerate(idx):
        nb = p + offsets
        ok = np.all((nb >= 0) & (nb < shape), axis=1)
        values = heatmap[tuple(nb[ok].T)].astype(np.float64)
        w = np.clip(values - values.min(), 0, None)
        if w.sum() > 0:
            out[n] = (nb[ok] * w[:, None]).sum(0) / w.sum()
    return out


def heatmaps_to_picks(heatmaps: np.ndarray, classes, voxel_size: float, thresholds, nms_scale: float = 0.5) -> dict:
    """{class name: ((N, 3) Å (x, y, z), (N,) scores)} from (C, Z, Y, X) heatmaps; `thresholds` per class
    (a dict by name, a list in class order, or one number)."""
    picks = {}
    for c, cls in enumerate(classes):
        if isinstance(thresholds, dict):
            t = thresholds[cls.name]
        elif np.ndim(thresholds):
            t = thresholds[c]
        else:
            t = thresholds
        zyx, scores = find_peaks(heatmaps[c], cls.radius / voxel_size, float(t), nms_scale)
        picks[cls.name] = (voxel_to_angstrom(zyx, voxel_size), scores)
    return picks
