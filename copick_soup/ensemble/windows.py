"""Windowed prediction over a whole tomogram, streamed in slabs, joined as a `Tiling` says (tiling.py).

`stream_heatmaps` reads the input one slab of windows at a time straight from zarr (a slab: one window deep along
the tiling's stream axis, the whole volume along the other two), runs every member of an ensemble on the same
windows (each on its own tomogram type), and yields planes as soon as no later window can touch them. It holds one
slab of accumulators (C x slab), never the whole C-channel heatmap, which is what keeps `pick` within a fraction
of the memory of whole-volume sliding-window inference. The accumulator lives on the device the network runs on:
on a GPU, windows are joined there and only finished planes cross to the host.
"""

from __future__ import annotations

import copy
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from copick_soup.data.tomogram import normalisation_stats
from copick_soup.device import default_batch_size
from copick_soup.ensemble.tiling import Tiling
from copick_soup.ensemble.tta import apply_view, tta_views, undo_view


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
    """Normalised slabs of one volume along `axis` (planes a0 .. a0 + window[axis] - 1) as torch tensors in
    `dtype`, zero-padded to at least the window along every axis, with each zarr chunk decoded (and, from S3,
    downloaded) once.

    zarr decompresses a chunk whole whatever part of it a read asks for, and tomogram chunks are often deeper than
    a slab (256 planes against 64): read slab by slab, every chunk was decoded up to four times. When chunks are
    deeper than the slab, the reader keeps the normalised planes of the chunk rows (one chunk deep) that the
    current slab overlaps, reading each row in bands one chunk wide so that the float32 transient is one band.
    """

    def __init__(self, volume, window, mean: float, std: float, dtype=np.float32, axis: int = 0):
        self.volume, self.window, self.axis = volume, tuple(window), axis
        self.mean, self.std, self.dtype = mean, std, dtype
        chunks = getattr(volume, "chunks", None)
        self.band = chunks[self.band_axis] if chunks else 32  # planes per read across the slab: a chunk's width
        self.chunks = chunks if chunks and chunks[axis] > self.window[axis] else None
        self.rows = {}  # first plane of a chunk row -> its normalised planes

    def __call__(self, a0: int):
        import torch

        a1 = min(a0 + self.window[self.axis], self.volume.shape[self.axis])
        if self.chunks is None:
            return self.read(a0, a1, padded=True)
        depth = self.chunks[self.axis]
        needed = range(a0 // depth * depth, a1, depth)
        self.rows = {r: planes for r, planes in self.rows.items() if r in needed}  # rows behind are done
        for r in needed:
            if r not in self.rows:
                self.rows[r] = self.read(r, min(r + depth, self.volume.shape[self.axis]))
        parts = [self.rows[r].narrow(self.axis, max(a0 - r, 0), min(a1, r + depth) - max(a0, r)) for r in needed]
        slab = parts[0] if len(parts) == 1 else torch.cat(parts, self.axis)  # a view unless it spans two rows
        pad = [max(w - s, 0) for w, s in zip(self.window, slab.shape)]
        return torch.nn.functional.pad(slab, (0, pad[2], 0, pad[1], 0, pad[0])) if any(pad) else slab

    def index(self, a0: int, a1: int | None, b0: int = 0, b1: int | None = None) -> tuple:
        """Planes a0 .. a1 - 1 along the stream axis, and b0 .. b1 - 1 along the band axis (the next one)."""
        index = [slice(None)] * 3
        index[self.axis] = slice(a0, a1)
        index[self.band_axis] = slice(b0, b1)
        return tuple(index)

    @property
    def band_axis(self) -> int:
        return (self.axis + 1) % 3

    def read(self, a0: int, a1: int, padded: bool = False):
        """Normalised planes a0 .. a1 - 1 along the stream axis, read in bands one chunk wide (each chunk decoded
        once) so that zarr's float32 transient is one band, not the slab; `padded`: zero-padded to the window, in
        place."""
        import torch

        shape = list(self.volume.shape)
        shape[self.axis] = a1 - a0
        full = [max(n, w) for n, w in zip(shape, self.window)] if padded else shape
        out = (torch.zeros if full != shape else torch.empty)(full, dtype=_torch_dtype(self.dtype))
        for b0 in range(0, shape[self.band_axis], self.band):
            b1 = min(b0 + self.band, shape[self.band_axis])
            part = self.volume[self.index(a0, a1, b0, b1)]
            target = out[tuple(slice(0, n) for n in shape)][self.index(0, None, b0, b1)]
            normalised(part, self.mean, self.std, self.dtype, out=target)
        return out


def _torch_dtype(dtype):
    import torch

    return getattr(torch, np.dtype(dtype).name)


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
    acc = torch.zeros((n_classes, *(depth if i == a else n for i, n in enumerate(shape))), dtype=_torch_dtype(dtype),
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
        if w != 1:
            pred *= float(w)
        total = pred if total is None else total.add_(pred)
    return total


def read_slabs(readers, a0: int, pin: bool = False) -> list:
    return [read(a0).pin_memory() if pin else read(a0) for read in readers]


def predict_volume(predict_batch, volume, n_classes: int, tiling: Tiling | int = 64, batch_size: int | None = None,
                   stats=None, device: str = "cpu") -> np.ndarray:
    """The whole (C, Z, Y, X) float32 heatmap of one input (for validation, tests and saved heatmaps)."""
    out = np.empty((n_classes, *volume.shape), dtype=np.float32)
    for chunk in stream_heatmaps([Source(predict_batch, volume, 1.0, stats)], n_classes, tiling, batch_size,
                                 device=device):
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
        with torch.inference_mode(), torch.autocast(device_type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            return mean_over_views(lambda v: self.model(v).float(), x, self.views)


def mean_over_views(run, x, views):
    """The mean over TTA `views` of `run` (a network on a torch batch), each view undone before it is added."""
    total = None
    for view in views:
        y = undo_view(run(apply_view(x, view)), view)
        total = y if total is None else total.add_(y)
    if len(views) > 1:
        total /= len(views)
    return total


class OpenVinoPredictor:
    """`predict_batch` for one torch model run by OpenVINO on the CPU (`--runtime openvino`): the model is
    converted once, compiled once per window shape (TTA's turns swap y and x), in bf16 where the CPU computes it
    natively (OpenVINO's own choice under `amp` auto and bf16), else float32. Takes and returns torch tensors on
    the CPU, as `TorchPredictor` does."""

    def __init__(self, model, amp_dtype=None, views=None):
        import openvino as ov
        import torch

        self.core = ov.Core()
        shape = ov.PartialShape([-1, 1, -1, -1, -1])
        side = 2 * getattr(model, "divisor", 8)  # the example must leave the deepest level more than one voxel
        self.model = ov.convert_model(model.float().eval(), example_input=torch.zeros(1, 1, side, side, side),
                                      input=[shape])
        self.precision = "bf16" if amp_dtype is not None else "f32"
        self.views = views or tta_views(1)
        self.compiled = {}

    def run(self, x):
        import torch

        key = tuple(x.shape)
        if key not in self.compiled:
            static = self.model.clone()
            static.reshape({0: list(key)})
            # as many threads as torch may use (a Ray actor sets that to its CPUs), not every core of the machine
            config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
            self.compiled[key] = self.core.compile_model(static, "CPU", config)
        out = self.compiled[key]([np.ascontiguousarray(x.numpy())])[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def __call__(self, batch):
        import torch

        return mean_over_views(lambda v: self.run(v.contiguous()), torch.as_tensor(batch), self.views)


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
