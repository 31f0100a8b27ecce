"""Reading a tomogram for the streamed inference: one slab of windows at a time, normalised, as torch tensors.

A slab is one window deep along the tiling's stream axis and the whole volume along the other two; windows.py
cuts its windows out of it. `SlabReader` decodes each zarr chunk once however many slabs it spans, `normalised`
z-scores a block in one multi-threaded pass, and `read_slabs` is what the read-ahead thread calls.
"""

from __future__ import annotations

import numpy as np


def torch_dtype(dtype):
    """The torch dtype of a numpy one (np.float16 -> torch.float16)."""
    import torch

    return getattr(torch, np.dtype(dtype).name)


def normalised(block, mean: float, std: float, dtype, out=None):
    """(block - mean) / std as a torch tensor in `dtype` (written into `out` when given): one multi-threaded
    pass, computed in float32 and rounded once, that leaves `block` untouched (numpy would convert to float16 on
    one thread, in a pass of its own)."""
    import torch

    x = torch.from_numpy(np.asarray(block, dtype=np.float32))
    out = torch.empty(x.shape, dtype=torch_dtype(dtype)) if out is None else out
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
        out = (torch.zeros if full != shape else torch.empty)(full, dtype=torch_dtype(self.dtype))
        for b0 in range(0, shape[self.band_axis], self.band):
            b1 = min(b0 + self.band, shape[self.band_axis])
            part = self.volume[self.index(a0, a1, b0, b1)]
            target = out[tuple(slice(0, n) for n in shape)][self.index(0, None, b0, b1)]
            normalised(part, self.mean, self.std, self.dtype, out=target)
        return out


def read_slabs(readers, a0: int, pin: bool = False) -> list:
    """Each reader's slab at plane a0; `pin`: in page-locked memory, so that the copy to a GPU runs without the
    host's involvement."""
    return [read(a0).pin_memory() if pin else read(a0) for read in readers]
