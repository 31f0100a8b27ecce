"""Lazy, windowed access to copick tomograms.

`open_tomogram` returns the zarr array of the full-resolution scale. Slicing it reads only the chunks that the
window touches, so a sliding-window job never holds the whole volume. Arrays are reached through copick's
own `tomogram.zarr()` store (never a hand-built path), which keeps portal, S3 and local projects alike.
Reads from object stores fail now and then, so every read is retried a bounded number of times (data/retry.py).
"""

from __future__ import annotations

import math

import numpy as np

from copick_soup.data.project import list_names
from copick_soup.data.retry import with_retries
from copick_soup.errors import SoupError


def find_voxel_spacing(run, voxel_size: float):
    """The run's voxel spacing closest to `voxel_size` (within 1e-3 Å), or an error listing those it has."""
    spacings = run.voxel_spacings
    for vs in spacings:
        if math.isclose(vs.voxel_size, voxel_size, abs_tol=1e-3):
            return vs
    have = sorted(vs.voxel_size for vs in spacings)
    raise SoupError(f"run {run.name}: no voxel size {voxel_size:g} Å; it has {list_names(have)}")


def find_tomogram(run, voxel_size: float, tomo_type: str):
    """The copick tomogram of a type at a voxel size, or an error listing the types there are."""
    vs = find_voxel_spacing(run, voxel_size)
    tomograms = vs.get_tomograms(tomo_type)
    if not tomograms:
        have = sorted({t.tomo_type for t in vs.tomograms})
        raise SoupError(
            f"run {run.name}: no tomogram of type '{tomo_type}' at {voxel_size:g} Å; it has {list_names(have)}"
        )
    return tomograms[0]


class TomogramArray:
    """A tomogram's zarr array whose reads are retried; slicing reads only the chunks a window touches."""

    def __init__(self, array, where: str):
        self.array, self.where = array, where
        self.shape, self.dtype, self.ndim = tuple(array.shape), array.dtype, array.ndim
        self.chunks = tuple(array.chunks)  # windowed readers align to these (infer/windows.py)

    def __getitem__(self, key):
        return with_retries(lambda: self.array[key], f"{self.where}: reading")

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


def open_tomogram(run, voxel_size: float, tomo_type: str) -> TomogramArray:
    """The full-resolution array (Z, Y, X) of a run's tomogram, opened read-only. Nothing is read yet."""
    import zarr

    tomogram = find_tomogram(run, voxel_size, tomo_type)
    where = f"run {run.name}: tomogram '{tomo_type}'"
    return TomogramArray(with_retries(lambda: zarr.open(tomogram.zarr(), mode="r")["0"], f"{where}: opening"),
                         where)


def run_volume(run, voxel_size: float, tomo_type: str, echo=print):
    """The run's tomogram at `voxel_size`: a lazy array, or one resampled (linear) in memory from the closest
    voxel size that has this type."""
    spacings = [vs for vs in run.voxel_spacings if vs.get_tomograms(tomo_type)]
    if not spacings or any(abs(vs.voxel_size - voxel_size) < 1e-3 for vs in spacings):
        return open_tomogram(run, voxel_size, tomo_type)  # or its error, which lists what the run has
    source = min(spacings, key=lambda vs: abs(vs.voxel_size - voxel_size))
    echo(f"run {run.name}: resampling '{tomo_type}' from {source.voxel_size:g} Å to {voxel_size:g} Å")
    return resample(open_tomogram(run, source.voxel_size, tomo_type)[:], source.voxel_size, voxel_size)


def resample(volume: np.ndarray, from_size: float, to_size: float) -> np.ndarray:
    """Linear resampling that keeps voxel 0 at 0 Å: output voxel j samples input position j * to / from."""
    from scipy.ndimage import affine_transform

    scale = to_size / from_size
    shape = tuple(max(int(np.floor((n - 1) / scale)) + 1, 1) for n in volume.shape)
    return affine_transform(volume.astype(np.float32), np.full(3, scale), output_shape=shape, order=1)


def run_tomo_types(run) -> set[str]:
    """Every tomogram type the run has, at any voxel size."""
    return {t.tomo_type for vs in run.voxel_spacings for t in vs.tomograms}


def available_tomo_types(run, voxel_size: float) -> list[str]:
    """Tomogram types a run has at a voxel size (empty if it lacks that voxel size)."""
    try:
        vs = find_voxel_spacing(run, voxel_size)
    except SoupError:
        return []
    return sorted({t.tomo_type for t in vs.tomograms})


NORMALISATIONS = ("zscore", "robust")


def normalisation_stats(array, method: str = "zscore") -> tuple[float, float]:
    """(centre, scale) to normalise a tomogram with, (x - centre) / scale, from the central eighth of the volume.

    `zscore`: mean and standard deviation. `robust`: median and 1.4826 x the median absolute deviation (the standard
    deviation of Gaussian noise), which gold fiducials, ice crystals and carbon edges do not drag the way they drag
    a mean and a standard deviation. The centre holds the sample and avoids empty borders, and reading it costs an
    eighth of the volume, so training (which loads whole tomograms) and streaming inference (which never does)
    normalise alike.
    """
    if method not in NORMALISATIONS:
        raise SoupError(f"normalisation '{method}': choose one of {', '.join(NORMALISATIONS)}")
    z, y, x = array.shape
    centre = np.asarray(array[z // 4: z // 4 + max(z // 2, 1), y // 4: y // 4 + max(y // 2, 1),
                              x // 4: x // 4 + max(x // 2, 1)], dtype=np.float32)
    where = getattr(array, "where", "tomogram")
    if not np.isfinite(centre).all():
        raise SoupError(f"{where} contains NaN or infinite values")
    if method == "robust":
        middle = float(np.median(centre))
        scale = 1.4826 * float(np.median(np.abs(centre - middle)))
    else:
        middle, scale = float(centre.mean()), float(centre.std())
    if scale == 0:  # zarr fills missing chunks silently: an empty store, or '.' chunk keys where '/' are expected
        raise SoupError(f"{where} is constant ({float(centre.flat[0]):g}) in its centre: missing chunks, or chunk "
                        f"keys with another dimension separator?")
    return middle, scale
