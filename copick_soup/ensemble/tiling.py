"""How a tomogram is cut into windows for the networks, and how the windows are joined again.

Two ways to join windows, both separable (per axis, each window start has a 1-D weight; a window's weight is the
outer product of its three), so no weight volume is ever stored:
- "gaussian", the classic sliding window (MONAI's `mode="gaussian"`): cubes overlapping by a fraction of their
  side, each prediction weighted by a Gaussian that fades towards its border. With 64³ windows and overlap 0.25
  the networks evaluate 2.4x the voxels of a 184x630x630 tomogram.
- "crop", `pick`'s default: windows shaped to the tomogram (the whole depth where memory allows, large in y and
  x), neighbours overlapping by at least 2 x `margin`. Each voxel is taken from the one window whose border is
  farthest from it, at least `margin` voxels inside, where the network saw all the context it uses; the voxels
  nearer a border are dropped. The networks evaluate each voxel about once.

`choose_tiling` picks the crop windows that evaluate the fewest voxels within a memory budget. Windows stream in
slabs along one axis (windows.stream_heatmaps); the one whose slab holds the fewest voxels, so that the slab and
its accumulator are small (with whole-depth windows: y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from copick_soup.errors import SoupError

BLENDS = ("gaussian", "crop")
MARGIN = 8  # voxels: a 64³ window at overlap 0.25 shares 16 with each neighbour, 8 on either side (tiling.md)
# How much slower per voxel a U-Net runs in larger windows: voxels/s ~ (window voxels)^-exponent. On a CPU the
# activations of larger windows miss the caches: 3.4 Mvox/s for unet3d_tiny at 64³ against 2.4 at 128³, 1.5 and
# 1.1 for medium (exponent 0.15, benchmarks/results/tiling.md). A GPU is not measured yet: 0, voxels alone count.
SLOWER_WITH_SIZE = {"cpu": 0.15, "cuda": 0.0}


@dataclass(frozen=True)
class Tiling:
    window: tuple  # (z, y, x) sides in voxels
    blend: str = "gaussian"
    overlap: float = 0.25  # gaussian: the fraction of a window its neighbours share
    margin: int = MARGIN  # crop: voxels dropped at inner borders
    axis: int = 0  # the axis slabs of windows stream along

    @classmethod
    def cube(cls, window: int, overlap: float = 0.25) -> Tiling:
        """The classic tiling: cubes of side `window`, Gaussian-blended where they overlap, streamed in z."""
        return cls((window,) * 3, "gaussian", overlap)

    def __post_init__(self):
        if self.blend not in BLENDS:
            raise SoupError(f"blend: choose one of {', '.join(BLENDS)}, got '{self.blend}'")

    def starts(self, length: int, axis: int) -> list[int]:
        """Window start offsets covering [0, length) along one axis."""
        w = self.window[axis]
        if self.blend == "gaussian":
            return window_starts(length, w, self.overlap)
        return window_starts(length, w, step=w - 2 * self.margin)

    def weights(self, length: int, axis: int) -> dict:
        """{start: (lo, hi, weight)}: the voxels [start + lo, start + hi) a window adds to, and their (hi - lo,)
        float32 weights, normalised so that the weights at every voxel of the axis sum to 1."""
        starts, w = self.starts(length, axis), self.window[axis]
        if self.blend == "crop":
            return crop_weights(length, w, starts)
        g = gaussian_1d(w)
        total = np.zeros(length, dtype=np.float32)
        for s in starts:
            total[s:s + w] += g[:length - s]
        return {s: (0, min(w, length - s), g[:length - s] / total[s:s + w]) for s in starts}

    def count(self, shape) -> int:
        """Windows over a volume of `shape`."""
        return math.prod(len(self.starts(n, a)) for a, n in enumerate(shape))

    def work(self, shape) -> float:
        """Voxels the networks evaluate per voxel of the volume."""
        return math.prod(len(self.starts(n, a)) * self.window[a] / n for a, n in enumerate(shape))

    def describe(self, shape) -> str:
        sides = "x".join(str(w) for w in self.window)
        joined = f"overlap {self.overlap:g}, Gaussian-blended" if self.blend == "gaussian" else \
            f"{self.margin}-voxel margins cropped"
        return f"{self.count(shape)} windows of {sides} ({joined}), {self.work(shape):.2f}x the voxels"


def window_starts(length: int, window: int, overlap: float = 0.0, step: int | None = None) -> list[int]:
    """Start offsets covering [0, length) with windows of `window`, `step` apart (default: overlapping by about
    `overlap`); the last one ends at `length`. A window longer than the axis starts at 0 and is zero-padded."""
    if length <= window:
        return [0]
    step = max(step or int(window * (1 - overlap)), 1)
    return list(range(0, length - window, step)) + [length - window]


def gaussian_1d(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """Peak 1 at the window centre; exp(-8) at the edges, so every voxel keeps a positive weight."""
    return np.exp(-0.5 * ((np.arange(window) - (window - 1) / 2) / (sigma_scale * window)) ** 2).astype(np.float32)


def crop_weights(length: int, window: int, starts: list[int]) -> dict:
    """Each voxel belongs to one window: neighbours split their overlap in the middle, so every window keeps at
    least half the overlap away from its inner borders; the first and last keep the volume's own ends."""
    cuts = [0] + [(a + window + b) // 2 for a, b in zip(starts, starts[1:])] + [length]
    return {s: (lo - s, hi - s, np.ones(hi - lo, dtype=np.float32))
            for s, lo, hi in zip(starts, cuts, cuts[1:])}


# ---- memory -----------------------------------------------------------------------------------------------------


NETWORK_OVERHEAD = 0.2e9  # bytes a forward pass holds whatever the window (oneDNN's scratch and weight copies)


def network_bytes(unet, amp: bool) -> float:
    """Bytes per window voxel one forward pass of a U-Net holds at its peak, beyond NETWORK_OVERHEAD: a few
    full-resolution feature maps (the first level's, in the decoder) and the float32 output. Measured with
    benchmarks/tiling.py (peak RSS of a forward pass at two window sizes) and rounded up; 16-bit autocast keeps
    instance norms in float32, so it saves less than half."""
    return unet.channels[0] * (14 if amp else 24) + unet.n_classes * 8 + 16


def forward_memory(unet, amp: bool, voxels: int, batch: int = 1) -> float:
    """Bytes one network call on `batch` windows of `voxels` holds."""
    return NETWORK_OVERHEAD + batch * voxels * network_bytes(unet, amp)


def tiling_memory(tiling: Tiling, shape, unets, n_members: int = 1, amp: bool = True, batch: int = 1) -> float:
    """Bytes the streamed inference of one run holds: the float16 accumulator and input slabs (with their
    read-ahead) one window deep along the stream axis, and one network call's activations."""
    return float(_memory(tiling.window, tiling.axis, shape, unets, n_members, amp, batch))


def _memory(window, axis, shape, unets, n_members, amp, batch):
    """tiling_memory of windows and stream axes given as numbers, or as numpy arrays of every choice at once."""
    slab = math.prod(np.where(axis == k, np.minimum(w, n), np.maximum(w, n))
                     for k, (w, n) in enumerate(zip(window, shape)))
    n_classes = max(u.n_classes for u in unets)
    deepest = max(unets, key=lambda u: network_bytes(u, amp))
    return 2.0 * slab * (n_classes + 2 * n_members) + forward_memory(deepest, amp, math.prod(window), batch)


def choose_tiling(shape, unets, max_memory_gb: float, n_members: int = 1, amp: bool = True, batch: int = 1,
                  margin: int = MARGIN, slower_with_size: float = 0.0, square: bool = False) -> Tiling:
    """The crop tiling that takes the least time within `max_memory_gb`: the voxels it evaluates, times how much
    slower per voxel its windows run (window voxels / 64³, to the power `slower_with_size`); then the fewest
    windows. Window sides are multiples of the members' largest divisor, at least 2 x margin + divisor, at most
    the axis rounded up; a budget too small for the smallest is an error naming the minimum. Every window shape
    is tried at once, as numpy arrays over (z side, y side, x side).

    `square`: y side = x side, for TTA views that turn the y-x plane. A turned window of another shape is a second
    network shape, and OpenVINO holds each compiled shape's activations at once: a 192x64x80 window took 1.38 GB
    against the 0.95 estimated (benchmarks/results/pick-full-tta8-auto-large.md)."""
    divisor = max(u.divisor for u in unets)
    smallest = math.ceil((2 * margin + 1) / divisor) * divisor
    longest = [_round_up(max(shape[1:]) if square and k else n, divisor) for k, n in enumerate(shape)]
    sides = [np.arange(min(smallest, top), top + 1, divisor) for top in longest]
    counts = [np.array([len(window_starts(n, w, step=w - 2 * margin)) for w in ws]) for n, ws in zip(shape, sides)]
    grid = [a.reshape([-1 if i == k else 1 for i in range(3)]) for k, a in enumerate(sides)]
    count_grid = [a.reshape([-1 if i == k else 1 for i in range(3)]) for k, a in enumerate(counts)]
    work = math.prod(c * w / n for c, w, n in zip(count_grid, grid, shape))
    cost = np.round(work * (math.prod(grid) / 64**3) ** slower_with_size, 3)
    windows = math.prod(count_grid)
    # each shape's stream axis: the one whose slabs (one window deep, the whole volume across) hold the fewest
    # voxels, the first of equals; and the memory of streaming along it (_memory)
    ratios = np.stack(np.broadcast_arrays(*[np.minimum(w, n) / n for w, n in zip(grid, shape)]))
    axis = np.argmin(ratios, axis=0)
    memory = _memory(grid, axis, shape, unets, n_members, amp, batch)
    fits = memory <= max_memory_gb * 1e9
    if square:
        fits &= grid[1] == grid[2]
    if not fits.any():
        raise SoupError(f"--max-memory {max_memory_gb:g}: too small for the smallest windows these members can run "
                        f"on a {'x'.join(map(str, shape))} tomogram; give at least "
                        f"{math.ceil(memory.min() / 1e7) / 100:g} (GB)")
    order = np.lexsort((memory[fits], windows[fits], cost[fits]))  # the least time, then windows, then memory
    best = tuple(int(i[order[0]]) for i in np.nonzero(fits))
    return Tiling(tuple(int(sides[k][best[k]]) for k in range(3)), "crop", margin=margin, axis=int(axis[best]))


def _round_up(n: int, divisor: int) -> int:
    return max(math.ceil(n / divisor), 1) * divisor
