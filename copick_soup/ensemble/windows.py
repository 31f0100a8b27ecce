"""Windowed prediction over a whole tomogram, streamed in slabs, joined as a `Tiling` says (tiling.py): the one
streaming function, `stream_heatmaps`, and `predict_volume`, which gathers its planes into a whole heatmap.

`stream_heatmaps` reads the input one slab of windows at a time straight from zarr (a slab: one window deep along
the tiling's stream axis, the whole volume along the other two), runs every member of an ensemble on the same
windows (each on its own tomogram type), and yields planes as soon as no later window can touch them. It holds one
slab of accumulators (C x slab), never the whole C-channel heatmap, which is what keeps `pick` within a fraction
of the memory of whole-volume sliding-window inference. The accumulator lives on the device the network runs on:
on a GPU, windows are joined there and only finished planes cross to the host.

What it streams over lives beside it: the slabs are read by slabs.py, and each member's windows are run by a
`predict_batch` from runtimes.py (torch or OpenVINO), which this module never looks inside beyond asking it to
`release` its working memory (OpenVINO's) between members and after the run.
"""

from __future__ import annotations

import ctypes
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from copick_soup.data.tomogram import normalisation_stats
from copick_soup.device import default_batch_size
from copick_soup.ensemble.slabs import SlabReader, read_slabs, torch_dtype
from copick_soup.ensemble.tiling import Tiling


@dataclass
class Source:
    """One ensemble member's input: `predict_batch` maps a (B, 1, w, w, w) float32 torch tensor (on the device
    that blends) to a (B, C, w, w, w) array or torch tensor (on any device)."""

    predict_batch: object
    volume: object  # (Z, Y, X) zarr array or numpy array
    weight: float = 1.0
    stats: tuple | None = None  # (mean, std); computed from the volume when None


class Chunk(NamedTuple):
    """Final heatmap planes start .. start + n - 1 along `axis` of the volume: (C, n, Y, X) for axis 0, (C, Z, n, X)
    for axis 1. When `owned` is False, `planes` is a view into the stream's accumulator, overwritten by the next
    slab: a consumer copies what it keeps past the next iteration. When True, the array is the consumer's to keep."""

    start: int
    planes: np.ndarray
    owned: bool
    axis: int = 0

    def host(self) -> np.ndarray:
        """The planes as a numpy array (copied from the device when they are on a GPU)."""
        return self.planes if isinstance(self.planes, np.ndarray) else self.planes.cpu().numpy()

    def index(self) -> tuple:
        """Where the planes go in a (C, Z, Y, X) array of the whole volume."""
        index = [slice(None)] * 4
        index[self.axis + 1] = slice(self.start, self.start + self.planes.shape[self.axis + 1])
        return tuple(index)


def as_tiling(tiling) -> Tiling:
    """A Tiling, or an int: cubes of that side, Gaussian-blended with overlap 0.25 (tests, validation)."""
    return tiling if isinstance(tiling, Tiling) else Tiling.cube(int(tiling))


def stream_heatmaps(sources: list[Source], n_classes: int, tiling: Tiling | int = 64, batch_size: int | None = None,
                    progress=None, dtype=np.float32, device: str = "cpu", on_device: bool = False):
    """Yield `Chunk`s in order along the tiling's stream axis: together, the final heatmaps of the whole volume.

    The ensemble heatmap is the weighted mean of the sources' predictions (weights are normalised here), joined as
    `tiling` says. Planes are numpy views of the accumulator where it lives in host memory (a CPU device), and
    fresh host copies otherwise (`Chunk.owned` says which); with `on_device`, torch views of the accumulator
    wherever it is (a peak search on the GPU: only the peaks cross to the host).
    `dtype` is that of the streamed buffers (input slabs, their read-ahead and the accumulator): float16 halves
    them for a ~1e-3 relative error, which `pick` accepts (z-scored noisy input; thresholds are searched in
    steps of 0.025); validation, the soup search and tests keep float32. `device` holds the accumulator and
    does the joining (the predictors' device, for `pick`). `batch_size` windows go through the network at once
    (default: `default_batch_size(device)`).
    """
    import torch

    tiling = as_tiling(tiling)
    batch_size = batch_size or default_batch_size(device)
    shape = tuple(sources[0].volume.shape)
    for s in sources:
        if tuple(s.volume.shape) != shape:
            raise ValueError(f"ensemble inputs differ in shape: {tuple(s.volume.shape)} vs {shape}")
    total = sum(s.weight for s in sources)
    weights = [np.float32(s.weight / total) for s in sources]
    stats = [s.stats or normalisation_stats(s.volume) for s in sources]
    # Per axis and window start: the voxels the window adds to and their weights, already divided by the total
    # weight there, so the accumulator holds heatmap values (float16-safe) and needs no final division.
    axis_weights = [{s: (lo, hi, torch.from_numpy(w).to(device)) for s, (lo, hi, w) in tiling.weights(n, a).items()}
                    for a, n in enumerate(shape)]
    a = tiling.axis
    starts = [sorted(w) for w in axis_weights]
    depth = min(tiling.window[a], shape[a])
    acc = torch.zeros((n_classes, *(depth if i == a else n for i, n in enumerate(shape))), dtype=torch_dtype(dtype),
                      device=device)
    # The windows of one slab: their corners in the slab (0 along the stream axis).
    corners = list(itertools.product(*([0] if i == a else starts[i] for i in range(3))))

    # Read-ahead: a thread reads (and decompresses) the next slab while this one runs through the network. The
    # first slab is read here: nothing else runs yet, and blosc decompresses with all cores only on the main thread.
    readers = [SlabReader(s.volume, tiling.window, *st, dtype=dtype, axis=a) for s, st in zip(sources, stats)]
    # Beside a GPU, slabs go to page-locked memory in the read-ahead thread, so that copying them to the device
    # runs without the host's involvement, in the order of the stream's kernels.
    pin = torch.device(device).type == "cuda"
    next_slabs = read_slabs(readers, starts[a][0], pin)
    with ThreadPoolExecutor(max_workers=1) as reader:
        for i, a0 in enumerate(starts[a]):
            slabs = [slab.to(device, non_blocking=pin) for slab in next_slabs]  # once per slab: windows are cut there
            if i + 1 < len(starts[a]):
                pending = reader.submit(read_slabs, readers, starts[a][i + 1], pin)
            for b in range(0, len(corners), batch_size):
                part = corners[b:b + batch_size]
                with torch.inference_mode():  # per batch: a generator must not leave the mode on between yields
                    pred = ensemble_batch(sources, slabs, weights, part, tiling.window, device)
                    for corner, p in zip(part, pred):
                        add_window(acc, p, [axis_weights[k][a0 if k == a else c] for k, c in enumerate(corner)],
                                   [0 if k == a else c for k, c in enumerate(corner)])
                if progress:
                    progress(len(part))
            n = (starts[a][i + 1] if i + 1 < len(starts[a]) else shape[a]) - a0
            planes = acc.narrow(a + 1, 0, n)
            if on_device:
                yield Chunk(a0, planes, owned=False, axis=a)
            else:  # .cpu() copies only an accumulator that is not in host memory; a host one is yielded as a view
                yield Chunk(a0, planes.cpu().numpy(), owned=not acc.is_cpu, axis=a)
            # Shift the accumulator by n planes, one plane at a time (no second buffer), and clear the tail.
            for k in range(depth - n):
                acc.select(a + 1, k).copy_(acc.select(a + 1, k + n))
            acc.narrow(a + 1, depth - n, n).zero_()
            if i + 1 < len(starts[a]):
                next_slabs = pending.result()
    for source in sources:  # the run is done: an idle process (between runs, a Ray actor) holds no activations
        release(source.predict_batch)
    return_freed_memory()


def release(predict_batch) -> None:
    """Free the working memory a predictor holds between calls, where it holds any (OpenVINO's compiled shapes)."""
    if hasattr(predict_batch, "release"):
        predict_batch.release()


def return_freed_memory() -> None:
    """Hand the memory a run freed back to the operating system (glibc's malloc_trim; a no-op elsewhere). glibc
    keeps freed blocks for reuse, most of all the read-ahead thread's heap, which nothing else reuses: 0.14-0.25 GB
    of a 128x256x256 run's slabs stayed resident after it (benchmarks/pick_memory.py, before this was added)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def add_window(acc, pred, weights, offsets) -> None:
    """acc[region] += pred[part] * weight: `weights` per axis (lo, hi, w), the window's first voxel at `offsets`
    in the accumulator."""
    (lz, hz, wz), (ly, hy, wy), (lx, hx, wx) = weights
    (oz, oy, ox) = offsets
    w = (wz[:, None, None] * wy[None, :, None] * wx[None, None, :]).to(acc.dtype)
    # One fused multiply-add in the accumulator's dtype: a float32 product added into a float16 accumulator
    # would cost a float32 pass, a conversion pass and a temporary.
    acc[:, oz + lz:oz + hz, oy + ly:oy + hy, ox + lx:ox + hx].addcmul_(pred[:, lz:hz, ly:hy, lx:hx].to(acc.dtype), w)


def ensemble_batch(sources, slabs, weights, corners, window, device="cpu"):
    """(B, C, wz, wy, wx) float32 torch tensor on `device`: the weighted sum of the members' predictions."""
    import torch

    total = None
    for source, slab, w in zip(sources, slabs, weights):
        pred = torch.as_tensor(source.predict_batch(_batch(slab, corners, window)), device=device)
        if len(sources) > 1:  # members take turns holding one network's working memory, not one each
            release(source.predict_batch)
        if w != 1:
            pred *= float(w)
        total = pred if total is None else total.add_(pred)
    return total


def predict_volume(predict_batch, volume, n_classes: int, tiling: Tiling | int = 64, batch_size: int | None = None,
                   stats=None, device: str = "cpu", progress=None) -> np.ndarray:
    """The whole (C, Z, Y, X) float32 heatmap of one input (for validation, tests and saved heatmaps);
    `progress(n)` is called as each n windows are done."""
    out = np.empty((n_classes, *volume.shape), dtype=np.float32)
    for chunk in stream_heatmaps([Source(predict_batch, volume, 1.0, stats)], n_classes, tiling, batch_size,
                                 progress=progress, device=device):
        out[chunk.index()] = chunk.planes
    return out


def _batch(slab, corners, window):
    """(B, 1, wz, wy, wx) float32 windows of a slab (a torch tensor) at `corners`, on the slab's device."""
    import torch

    out = torch.empty((len(corners), 1, *window), dtype=torch.float32, device=slab.device)
    for i, (z0, y0, x0) in enumerate(corners):
        block = slab[z0:z0 + window[0], y0:y0 + window[1], x0:x0 + window[2]]
        if block.shape != out.shape[2:]:  # past the volume's end (a side shorter than the window)
            out[i].zero_()
        out[i, 0, :block.shape[0], :block.shape[1], :block.shape[2]] = block  # converted as it is copied
    return out
