"""Per-class local maxima by max-pool non-maximum suppression, refined to sub-voxel positions, streamed.

A voxel is a peak of class c when it equals the maximum of its cube of side 2 r_c + 1, r_c = round(nms_scale
x radius in voxels), and exceeds the class threshold; of peaks that tie on a plateau, the first is kept. Its
position is then refined by a log-parabola fit along each axis, which recovers the fraction of a voxel a
particle sits off the grid.

`PeakStream` takes heatmap planes in order along one axis, as `stream_heatmaps` yields them, and decides each
plane once the R = max(r_c) + 1 planes after it have arrived, keeping only 2R planes per class between chunks.
The search is the same along any axis (a cube is a cube); positions are put back in (z, y, x) at the end. Whole
heatmaps go through the same code as a single chunk (`heatmaps_to_picks`).
"""

from __future__ import annotations

import itertools

import numpy as np

from copick_soup.data.coords import voxel_to_angstrom


def class_thresholds(classes, thresholds) -> list[float]:
    """Per-class thresholds from a dict by name, a list in class order, or one number."""
    if isinstance(thresholds, dict):
        return [float(thresholds[c.name]) for c in classes]
    if np.ndim(thresholds):
        return [float(t) for t in thresholds]
    return [float(thresholds)] * len(classes)


def local_maxima(block, r: int, threshold: float, lo: int, hi: int, tile: int = 48) -> np.ndarray:
    """(N, 3) indices (into `block`, (Z, Y, X)) of peaks whose z lies in [lo, hi). `block`: a numpy array, or a
    torch tensor, searched where it lives (`device_maxima`)."""
    import torch
    from scipy.ndimage import maximum_filter

    if isinstance(block, torch.Tensor):
        return device_maxima(block, r, threshold, lo, hi)

    found = [np.zeros((0, 3), dtype=np.int64)]
    if hi <= lo or block.size == 0:
        return found[0]
    top = torch.from_numpy(np.ascontiguousarray(block[lo:hi])).amax(0).numpy()  # torch: numpy's float16 max is slow
    # In (y, x) tiles with an r-voxel halo: a tile with nothing above the threshold can hold no peak and is
    # skipped (most of a heatmap is background), and the float32 temporaries stay a fraction of the block.
    # Within a tile, separable running maxima (scipy's are O(1) per voxel whatever r is); outside the block
    # counts as -inf.
    for y0, x0 in itertools.product(range(0, block.shape[1], tile), range(0, block.shape[2], tile)):
        if not top[y0:y0 + tile, x0:x0 + tile].max() > threshold:
            continue
        ya, xa = max(y0 - r, 0), max(x0 - r, 0)
        part = np.asarray(block[:, ya:y0 + tile + r, xa:x0 + tile + r], dtype=np.float32)
        pooled = maximum_filter(part, size=2 * r + 1, mode="constant", cval=-np.inf)
        idx = np.argwhere((part == pooled) & (part > threshold)) + (0, ya, xa)
        core = (idx[:, 1] >= y0) & (idx[:, 1] < y0 + tile) & (idx[:, 2] >= x0) & (idx[:, 2] < x0 + tile)
        found.append(idx[core])
    idx = np.concatenate(found)
    idx = drop_plateau_twins(idx[np.lexsort(idx.T[::-1])], r)  # in z, y, x order, as one whole-block pass
    return idx[(idx[:, 0] >= lo) & (idx[:, 0] < hi)]


def device_maxima(block, r: int, threshold: float, lo: int, hi: int) -> np.ndarray:
    """`local_maxima` of a torch tensor, on its device (a GPU beside the accumulator): a max-pool of side 2r + 1
    (padded with -inf, as scipy's filter with cval -inf) compared with the block; only the peaks' indices cross to
    the host."""
    import torch.nn.functional as F

    if hi <= lo or block.numel() == 0:
        return np.zeros((0, 3), dtype=np.int64)
    x = block.float()
    pooled = F.max_pool3d(x[None, None], 2 * r + 1, stride=1, padding=r)[0, 0]
    peak = (x == pooled) & (x > threshold)
    peak[:lo] = False
    peak[hi:] = False
    idx = peak.nonzero().cpu().numpy()  # in z, y, x order
    return drop_plateau_twins(idx, r)


def drop_plateau_twins(idx: np.ndarray, r: int) -> np.ndarray:
    """Equal neighbouring maxima (a flat top) all pass the max-pool test; keep the first within r of another."""
    if len(idx) < 2:
        return idx
    from scipy.spatial import cKDTree

    keep = np.ones(len(idx), dtype=bool)
    for i, j in sorted(cKDTree(idx).query_pairs(r, p=np.inf)):
        if keep[i] and keep[j]:
            keep[j] = False
    return idx[keep]


def values_at(block, idx: np.ndarray) -> np.ndarray:
    """float64 values of `block` (a numpy array or a torch tensor on any device) at (N, 3) indices."""
    if isinstance(block, np.ndarray):
        return block[tuple(idx.T)].astype(np.float64)
    import torch

    at = torch.as_tensor(idx.T, device=block.device)
    return block[tuple(at)].double().cpu().numpy()


def refine(block, idx: np.ndarray) -> np.ndarray:
    """Sub-voxel positions: per axis, the vertex of a parabola through the log heat at the peak and its two
    neighbours, which is exact for a Gaussian peak. Offsets are capped at half a voxel."""
    out = idx.astype(np.float64)
    eps = 1e-12
    for axis in range(3):
        lo, hi = idx.copy(), idx.copy()
        lo[:, axis] -= 1
        hi[:, axis] += 1
        inside = (lo[:, axis] >= 0) & (hi[:, axis] < block.shape[axis])
        if not inside.any():
            continue
        f0 = np.log(np.maximum(values_at(block, idx[inside]), eps))
        fm = np.log(np.maximum(values_at(block, lo[inside]), eps))
        fp = np.log(np.maximum(values_at(block, hi[inside]), eps))
        curvature = fm - 2 * f0 + fp
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(curvature < 0, 0.5 * (fm - fp) / curvature, 0.0)
        out[inside, axis] += np.clip(np.nan_to_num(shift), -0.5, 0.5)
    return out


class PeakStream:
    """Accumulates peaks over heatmap chunks that arrive in order along one axis and together cover a volume of
    `shape` (Z, Y, X)."""

    def __init__(self, classes, voxel_size: float, thresholds, shape, nms_scale: float = 0.5):
        self.voxel_size, self.shape, self.axis = voxel_size, tuple(shape), None
        self.names = [c.name for c in classes]
        self.radii = [max(int(round(nms_scale * c.radius / voxel_size)), 1) for c in classes]
        self.thresholds = class_thresholds(classes, thresholds)
        # Per class: the last planes kept for context, the z of the first of them, and the z below which
        # every plane is decided. Each class keeps only its own radius of context, so small particles
        # (most of them) redo few planes between chunks.
        self.carry = [None] * len(classes)
        self.carry_start = [0] * len(classes)
        self.done = [0] * len(classes)
        self.found = [[] for _ in classes]  # per class, (zyx, score) arrays

    def add(self, start: int, planes: np.ndarray, owned: bool = False, axis: int = 0) -> None:
        """planes (C, ..., n, ...) for start .. start + n - 1 along `axis` (a windows.Chunk), the next planes in
        order. They are used before this returns (what is kept for the next chunk is copied), so `owned` makes no
        difference here."""
        if self.axis is None:
            self.axis, self.depth = axis, self.shape[axis]
        if axis != self.axis:
            raise ValueError(f"peak search along axis {self.axis} got planes along axis {axis}")
        planes = planes.movedim(axis + 1, 1) if hasattr(planes, "movedim") else np.moveaxis(planes, axis + 1, 1)
        for c in range(len(self.names)):
            self.add_class(c, start, planes[c])

    def add_class(self, c: int, z0: int, planes: np.ndarray) -> None:
        end, margin, done = z0 + len(planes), self.radii[c] + 1, self.done[c]
        decide_to = end if end >= self.depth else max(end - margin, done)
        keep_from = max(decide_to - margin, 0)
        carry = self.carry[c]
        block = planes if carry is None else _concat(carry, planes)
        offset = z0 if carry is None else self.carry_start[c]
        idx = local_maxima(block, self.radii[c], self.thresholds[c], done - offset, decide_to - offset)
        if len(idx):
            zyx = refine(block, idx)
            zyx[:, 0] += offset
            self.found[c].append((zyx, values_at(block, idx)))
        self.carry[c] = _copy(block[keep_from - offset:])
        self.carry_start[c], self.done[c] = keep_from, decide_to

    def picks(self) -> dict:
        """{class name: ((N, 3) Å (x, y, z), (N,) scores)}, strongest first."""
        out = {}
        first = self.axis or 0  # None: no planes came, nothing found
        axes = [first] + [a for a in range(3) if a != first]  # the found positions' axes, stream axis first
        for name, found in zip(self.names, self.found):
            zyx = (np.concatenate([f[0] for f in found]) if found else np.zeros((0, 3)))[:, np.argsort(axes)]
            scores = np.concatenate([f[1] for f in found]) if found else np.zeros(0)
            order = np.argsort(-scores, kind="stable")
            out[name] = (voxel_to_angstrom(zyx[order], self.voxel_size), scores[order])
        return out


def _concat(a, b):
    """Planes a then b, numpy arrays or torch tensors (the peak search runs where the heatmap is)."""
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b])
    import torch

    return torch.cat([a, b])


def _copy(a):
    return a.copy() if isinstance(a, np.ndarray) else a.clone()


def heatmaps_to_picks(heatmaps: np.ndarray, classes, voxel_size: float, thresholds, nms_scale: float = 0.5) -> dict:
    """{class name: ((N, 3) Å (x, y, z), (N,) scores)} from whole (C, Z, Y, X) heatmaps."""
    stream = PeakStream(classes, voxel_size, thresholds, heatmaps.shape[1:], nms_scale)
    stream.add(0, heatmaps)
    return stream.picks()
