"""Sliding-window prediction over a whole tomogram, streamed in z, with Gaussian blending.

Windows sit on a grid (the product of per-axis start offsets). Each prediction is weighted by a Gaussian that
fades towards the window's border, where a U-Net sees least context, so overlaps blend without seams. Because
both the grid and the Gaussian are separable, the total weight at a voxel is a product of three 1-D sums:
no weight volume is ever stored.

`stream_heatmaps` reads the input one z-slab of windows at a time straight from zarr, runs every member of an
ensemble on the same windows (each on its own tomogram type), and yields planes as soon as no later window can
touch them. It holds one slab of accumulators (C x window x Y x X), never the whole C-channel heatmap, which is
what keeps `pick` within a fraction of the memory of whole-volume sliding-window inference. The accumulator
lives on the device the network runs on: on a GPU, windows are blended there and only finished planes cross
to the host.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from copick_soup.data.tomogram import normalisation_stats
from copick_soup.device import default_batch_size
from copick_soup.ensemble.tta import apply_view, tta_views, undo_view


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets covering [0, length) with windows of `window`, overlapping by about `overlap`."""
    if length <= window:
        return [0]
    step = max(int(window * (1 - overlap)), 1)
    starts = list(range(0, length - window, step))
    return starts + [length - window]


def gaussian_1d(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """Peak 1 at the window centre; exp(-8) at the edges, so every voxel keeps a positive weight."""
    return np.exp(-0.5 * ((np.arange(window) - (window - 1) / 2) / (sigma_scale * window)) ** 2).astype(np.float32)


def axis_weight(length: int, starts: list[int], g: np.ndarray) -> np.ndarray:
    """Sum over windows of the 1-D Gaussian, along one axis of `length` voxels."""
    total = np.zeros(length, dtype=np.float32)
    for s in starts:
        n = min(len(g), length - s)
        total[s:s + n] += g[:n]
    return total


@dataclass
class Source:
    """One ensemble member's input: `predict_batch` maps a (B, 1, w, w, w) float32 torch tensor (on the device
    that blends) to a (B, C, w, w, w) array or torch tensor (on any device)."""

    predict_batch: object
    volume: object  # (Z, Y, X) zarr array or numpy array
    weight: float = 1.0
    stats: tuple | None = None  # (mean, std); computed from the volume when None


def normalised(block, mean: float, std: float, dtype, out=None):
    """(block - mean) / std as a torch tensor in `dtype` (written into `out` when given): one multi-threaded
    pass, computed in float32 and rounded once, that leaves `block` untouched (numpy would convert to float16 on
    one thread, in a pass of its own)."""
    import torch

    x = torch.from_numpy(np.asarray(block, dtype=np.float32))
    out = torch.empty(x.shape, dtype=_torch_dtype(dtype)) if out is None else out
    return torch.add(torch.tensor(-mean / std), x, alpha=1 / std, out=out)  # x / std - mean / std


class SlabReader:
    """Normalised slabs volume[z0:z0+window] of one volume as torch tensors in `dtype`, zero-padded to at least
    `window` along every axis, with each zarr chunk decoded (and, from S3, downloaded) once.

    zarr decompresses a chunk whole whatever part of it a read asks for, and tomogram chunks are often deeper than
    a slab (256 planes against 64): read slab by slab, every chunk was decoded up to four times. When chunks are
    deeper than the window, the reader keeps the normalised planes of the chunk rows (one chunk deep) that the
    current slab overlaps, reading each row in bands one chunk high so that the float32 transient is one band.
    """

    def __init__(self, volume, window: int, mean: float, std: float, dtype=np.float32):
        self.volume, self.window, self.mean, self.std, self.dtype = volume, window, mean, std, dtype
        chunks = getattr(volume, "chunks", None)
        self.chunks = chunks if chunks and chunks[0] > window else None
        self.rows = {}  # first plane of a chunk row -> its normalised planes

    def __call__(self, z0: int):
        import torch

        z1 = min(z0 + self.window, self.volume.shape[0])
        if self.chunks is None:
            slab = normalised(self.volume[z0:z1], self.mean, self.std, self.dtype)
        else:
            depth = self.chunks[0]
            needed = range(z0 // depth * depth, z1, depth)
            self.rows = {r: planes for r, planes in self.rows.items() if r in needed}  # rows behind are done
            for r in needed:
                if r not in self.rows:
                    self.rows[r] = self.read_row(r)
            parts = [self.rows[r][max(z0 - r, 0):z1 - r] for r in needed]
            slab = parts[0] if len(parts) == 1 else torch.cat(parts)  # a view unless it spans two rows
        pad = [max(self.window - s, 0) for s in slab.shape]
        return torch.nn.functional.pad(slab, (0, pad[2], 0, pad[1], 0, pad[0])) if any(pad) else slab

    def read_row(self, r: int):
        import torch

        rows = self.volume.shape[0]
        out = torch.empty((min(self.chunks[0], rows - r), *self.volume.shape[1:]), dtype=_torch_dtype(self.dtype))
        for y0 in range(0, out.shape[1], self.chunks[1]):
            band = self.volume[r:r + len(out), y0:y0 + self.chunks[1]]
            normalised(band, self.mean, self.std, self.dtype, out=out[:, y0:y0 + self.chunks[1]])
        return out


def _torch_dtype(dtype):
    import torch

    return getattr(torch, np.dtype(dtype).name)


class Chunk(NamedTuple):
    """Final heatmap planes (C, n, Y, X) of z0 .. z0 + n - 1. When `owned` is False, `planes` is a view into the
    stream's accumulator, overwritten by the next slab: a consumer copies what it keeps past the next iteration.
    When True, the array is the consumer's to keep."""

    z0: int
    planes: np.ndarray
    owned: bool


def stream_heatmaps(sources: list[Source], n_classes: int, window: int = 64, overlap: float = 0.25,
                    batch_size: int | None = None, progress=None, dtype=np.float32, device: str = "cpu"):
    """Yield `Chunk`s in z order: together, the final blended heatmaps of the whole volume.

    The ensemble heatmap is the weighted mean of the sources' predictions (weights are normalised here).
    Planes are views of the accumulator where it lives in host memory (a CPU device), and fresh host copies
    otherwise (`Chunk.owned` says which).
    `dtype` is that of the streamed buffers (input slabs, their read-ahead and the accumulator): float16 halves
    them for a ~1e-3 relative error, which `pick` accepts (z-scored noisy input; thresholds are searched in
    steps of 0.025); validation, the soup search and tests keep float32. `device` holds the accumulator and
    does the blending (the predictors' device, for `pick`). `batch_size` windows go through the network at once
    (default: `default_batch_size(device)`).
    """
    import torch

    batch_size = batch_size or default_batch_size(device)

    shape = tuple(sources[0].volume.shape)
    for s in sources:
        if tuple(s.volume.shape) != shape:
            raise ValueError(f"ensemble inputs differ in shape: {tuple(s.volume.shape)} vs {shape}")
    total = sum(s.weight for s in sources)
    weights = [np.float32(s.weight / total) for s in sources]
    stats = [s.stats or normalisation_stats(s.volume) for s in sources]
    g = gaussian_1d(window)
    zs, ys, xs = (window_starts(n, window, overlap) for n in shape)
    # Each window's Gaussian divided by the total weight at each voxel, per axis: contributions are added
    # already normalised, so the accumulator holds heatmap values (float16-safe) and needs no final division.
    norm = [axis_weight(n, starts, g) for n, starts in zip(shape, (zs, ys, xs))]
    wz, wy, wx = ({s: torch.from_numpy(g[:n - s] / w[s:s + window]).to(device)  # a Gaussian, clipped at the
                   for s in starts} for n, starts, w in zip(shape, (zs, ys, xs), norm))  # volume's end, per start
    depth = min(window, shape[0])
    acc = torch.zeros((n_classes, depth, shape[1], shape[2]), dtype=_torch_dtype(dtype), device=device)
    jobs = [(y0, x0) for y0 in ys for x0 in xs]

    # Read-ahead: a thread reads (and decompresses) the next slab while this one runs through the network. The
    # first slab is read here: nothing else runs yet, and blosc decompresses with all cores only on the main thread.
    readers = [SlabReader(s.volume, window, *st, dtype=dtype) for s, st in zip(sources, stats)]
    next_slabs = read_slabs(readers, zs[0])
    with ThreadPoolExecutor(max_workers=1) as reader:
        for i, z0 in enumerate(zs):
            slabs = [slab.to(device) for slab in next_slabs]  # once per slab: windows are cut there
            if i + 1 < len(zs):
                pending = reader.submit(read_slabs, readers, zs[i + 1])
            dz = min(window, shape[0] - z0)
            for b in range(0, len(jobs), batch_size):
                part = jobs[b:b + batch_size]
                with torch.inference_mode():  # per batch: a generator must not leave the mode on between yields
                    pred = ensemble_batch(sources, slabs, weights, part, window, device)
                    for (y0, x0), p in zip(part, pred):
                        dy, dx = len(wy[y0]), len(wx[x0])
                        w = (wz[z0][:, None, None] * wy[y0][None, :, None] * wx[x0][None, None, :]).to(acc.dtype)
                        # One fused multiply-add in the accumulator's dtype: a float32 product added into a
                        # float16 accumulator would cost a float32 pass, a conversion pass and a temporary.
                        acc[:, :dz, y0:y0 + dy, x0:x0 + dx].addcmul_(p[:, :dz, :dy, :dx].to(acc.dtype), w)
                if progress:
                    progress(len(part))
            z_next = zs[i + 1] if i + 1 < len(zs) else shape[0]
            n = z_next - z0
            # .cpu() copies only an accumulator that is not in host memory; a host one is yielded as a view.
            yield Chunk(z0, acc[:, :n].cpu().numpy(), owned=not acc.is_cpu)
            # Shift the accumulator by n planes, one plane at a time (no second buffer), and clear the tail.
            for k in range(depth - n):
                acc[:, k] = acc[:, k + n]
            acc[:, max(depth - n, 0):] = 0
            if i + 1 < len(zs):
                next_slabs = pending.result()


def ensemble_batch(sources, slabs, weights, corners, window: int, device="cpu"):
    """(B, C, w, w, w) float32 torch tensor on `device`: the weighted sum of the members' predictions."""
    import torch

    total = None
    for source, slab, w in zip(sources, slabs, weights):
        pred = torch.as_tensor(source.predict_batch(_batch(slab, corners, window)), device=device)
        if w != 1:
            pred *= float(w)
        total = pred if total is None else total.add_(pred)
    return total


def read_slabs(readers, z0: int) -> list:
    return [read(z0) for read in readers]


def count_windows(shape, window: int, overlap: float) -> int:
    return int(np.prod([len(window_starts(n, window, overlap)) for n in shape]))


def predict_volume(predict_batch, volume, n_classes: int, window: int = 64, overlap: float = 0.25,
                   batch_size: int | None = None, stats=None, device: str = "cpu") -> np.ndarray:
    """The whole (C, Z, Y, X) float32 heatmap of one input (for validation, tests and saved heatmaps)."""
    chunks = stream_heatmaps([Source(predict_batch, volume, 1.0, stats)], n_classes, window, overlap, batch_size,
                             device=device)
    return np.concatenate([c.planes if c.owned else c.planes.copy() for c in chunks], axis=1)


def _batch(slab, corners, window: int):
    """(B, 1, w, w, w) float32 windows of a slab (a torch tensor) at the (y0, x0) corners, on the slab's device."""
    import torch

    out = torch.empty((len(corners), 1, window, window, window), dtype=torch.float32, device=slab.device)
    for i, (y0, x0) in enumerate(corners):
        block = slab[:, y0:y0 + window, x0:x0 + window]
        if block.shape != out.shape[2:]:  # past the volume's end (a side shorter than the window)
            out[i].zero_()
        out[i, 0, :block.shape[0], :block.shape[1], :block.shape[2]] = block  # converted as it is copied
    return out


class TorchPredictor:
    """`predict_batch` for one torch model: inference mode, optional autocast, optional TTA views. Returns a
    float32 tensor on the model's device."""

    def __init__(self, model, device="cpu", amp_dtype=None, views=None):
        self.model = model if amp_dtype is None else cast_weights(model, amp_dtype)
        self.device, self.amp_dtype = device, amp_dtype
        self.views = views or tta_views(1)

    def __call__(self, batch):
        import torch

        x = torch.as_tensor(batch, device=self.device)
        device_type = torch.device(self.device).type
        total = None
        with torch.inference_mode(), torch.autocast(device_type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            for view in self.views:
                y = undo_view(self.model(apply_view(x, view)), view).float()
                total = y if total is None else total.add_(y)
            if len(self.views) > 1:
                total /= len(self.views)
        return total


def cast_weights(model, dtype):
    """A copy of `model` whose convolution and linear weights are already in `dtype`, as autocast would cast them.

    autocast casts a weight on every call and keeps the cast only until its context closes, which here is every
    call (it must not stay open between a generator's yields): at one window per call every weight would be cast
    again for every window. Other layers (the norms) keep their float32 parameters, as under autocast, so the
    outputs are the same to the bit.
    """
    from torch import nn

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            module.to(dtype)
    return model
