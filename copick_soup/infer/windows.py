"""Sliding-window prediction over a whole tomogram, with Gaussian blending of overlapping windows.

The tomogram is read one z-slab of windows at a time, straight from zarr, so the input never sits in memory
whole. Windows of a slab are batched through the network; each prediction is weighted by a Gaussian that
fades towards the window's border, where a U-Net sees least context, which leaves no seams.
"""

from __future__ import annotations

import numpy as np

from copick_soup.data.tomogram import normalisation_stats


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets covering [0, length) with windows of `window`, overlapping by about `overlap`."""
    if length <= window:
        return [0]
    step = max(int(window * (1 - overlap)), 1)
    starts = list(range(0, length - window, step))
    return starts + [length - window]


def gaussian_weight(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    g = np.exp(-0.5 * ((np.arange(window) - (window - 1) / 2) / (sigma_scale * window)) ** 2)
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)  # never 0, so every voxel gets a weight


def read_window_slab(volume, z0: int, window: int, mean: float, std: float) -> np.ndarray:
    """Normalised volume[z0:z0+window], zero-padded (the normalised mean) to `window` along every axis."""
    slab = (np.asarray(volume[z0:z0 + window], dtype=np.float32) - mean) / std
    pad = [(0, max(window - s, 0)) for s in slab.shape]
    return np.pad(slab, pad) if any(p[1] for p in pad) else slab


def predict_volume(predict_batch, volume, n_classes: int, window: int = 64, overlap: float = 0.25,
                   batch_size: int = 4, stats=None) -> np.ndarray:
    """(C, Z, Y, X) float32 heatmaps of `volume` (zarr or numpy, (Z, Y, X)).

    `predict_batch` maps a (B, 1, w, w, w) float32 array to (B, C, w, w, w) predictions (see `TorchPredictor`).
    `stats` is the (mean, std) to normalise with; by default computed from the volume.
    """
    mean, std = stats or normalisation_stats(volume)
    shape = volume.shape
    out = np.zeros((n_classes, *shape), dtype=np.float32)
    weight = np.zeros(shape, dtype=np.float32)
    g = gaussian_weight(window)
    ys, xs = window_starts(shape[1], window, overlap), window_starts(shape[2], window, overlap)
    for z0 in window_starts(shape[0], window, overlap):
        slab = read_window_slab(volume, z0, window, mean, std)
        jobs = [(y0, x0) for y0 in ys for x0 in xs]
        for i in range(0, len(jobs), batch_size):
            part = jobs[i:i + batch_size]
            batch = np.stack([_padded(slab[:, y0:y0 + window, x0:x0 + window], window) for y0, x0 in part])[:, None]
            pred = predict_batch(batch)
            for (y0, x0), p in zip(part, pred):
                dz, dy, dx = (min(window, shape[0] - z0), min(window, shape[1] - y0), min(window, shape[2] - x0))
                gw = g[:dz, :dy, :dx]
                out[:, z0:z0 + dz, y0:y0 + dy, x0:x0 + dx] += p[:, :dz, :dy, :dx] * gw
                weight[z0:z0 + dz, y0:y0 + dy, x0:x0 + dx] += gw
    out /= weight
    return out


def _padded(block: np.ndarray, window: int) -> np.ndarray:
    pad = [(0, window - s) for s in block.shape]
    return np.pad(block, pad) if any(p[1] for p in pad) else block


class TorchPredictor:
    """`predict_batch` for one torch model: inference mode, optional autocast, optional TTA views."""

    def __init__(self, model, device="cpu", amp_dtype=None, views=None):
        from copick_soup.infer.tta import tta_views

        self.model, self.device, self.amp_dtype = model, device, amp_dtype
        self.views = views or tta_views(1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from copick_soup.infer.tta import apply_view, undo_view

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        device_type = torch.device(self.device).type
        total = None
        with torch.inference_mode(), torch.autocast(device_type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            for view in self.views:
                y = undo_view(self.model(apply_view(x, view)), view).float()
                total = y if total is None else total + y
        return (total / len(self.views)).cpu().numpy()
