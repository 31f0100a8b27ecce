"""Lazy, windowed access to copick tomograms.

`open_tomogram` returns the zarr array of the full-resolution scale. Slicing it reads only the chunks that the
window touches, so a sliding-window job never holds the whole volume. Arrays are reached through copick's
own `tomogram.zarr()` store (never a hand-built path), which keeps portal, S3 and local projects alike.
Reads from object stores fail now and then, so every read is retried a bounded number of times (data/retry.py).
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping

import numpy as np

from copick_soup.data.project import list_names
from copick_soup.data.retry import with_retries
from copick_soup.errors import SoupError

# Voxel sizes this close are one size to a network: the portal's and Kaggle's layouts store `VoxelSpacing10.000`
# for tomograms the soup knows as 10.012 Å (0.12% apart). Such a tomogram is read as it is (no resampling), and
# picks are placed with its own spacing.
SAME_SIZE = 0.005


def same_size(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_SIZE * b


def near_spacings(run, voxel_size: float, tomo_type: str | None = None) -> list:
    """The run's voxel spacings within SAME_SIZE of `voxel_size` (holding `tomo_type`, if given), closest first."""
    near = [vs for vs in run.voxel_spacings if same_size(vs.voxel_size, voxel_size)
            and (tomo_type is None or vs.get_tomograms(tomo_type))]
    return sorted(near, key=lambda vs: abs(vs.voxel_size - voxel_size))


def find_voxel_spacing(run, voxel_size: float, tomo_type: str | None = None):
    """The run's voxel spacing closest to `voxel_size` within 0.5% (one holding `tomo_type` where one does), or
    an error listing the sizes it has."""
    near = near_spacings(run, voxel_size, tomo_type) or near_spacings(run, voxel_size)
    if near:
        return near[0]
    have = sorted(vs.voxel_size for vs in run.voxel_spacings)
    raise SoupError(f"run {run.name}: no voxel size {voxel_size:g} Å; it has {list_names(have)}")


def grid_voxel_size(run, voxel_size: float, tomo_type: str, source_size: float | None = None) -> float:
    """The spacing of the array `run_volume` gives for these arguments: the run's own where it is within 0.5% of
    `voxel_size` (read as it is), else `voxel_size` (resampled to it). Voxel indices times this are copick's Å."""
    near = near_spacings(run, source_size or voxel_size, tomo_type)
    if near and same_size(near[0].voxel_size, voxel_size):
        return float(near[0].voxel_size)
    return float(voxel_size)


def find_tomogram(run, voxel_size: float, tomo_type: str):
    """The copick tomogram of a type at a voxel size, or an error listing the types there are."""
    vs = find_voxel_spacing(run, voxel_size, tomo_type)
    tomograms = vs.get_tomograms(tomo_type)
    if not tomograms:
        have = sorted({t.tomo_type for t in vs.tomograms})
        raise SoupError(
            f"run {run.name}: no tomogram of type '{tomo_type}' at {voxel_size:g} Å; it has {list_names(have)}"
        )
    return tomograms[0]


class TomogramArray:
    """A tomogram's zarr array whose reads are retried; slicing reads only the chunks a window touches."""

    def __init__(self, array, where: str, voxel_size: float):
        self.array, self.where, self.voxel_size = array, where, voxel_size  # the spacing of this array's grid
        self.shape, self.dtype, self.ndim = tuple(array.shape), array.dtype, array.ndim
        self.chunks = tuple(array.chunks)  # the slab reader aligns its reads to these (ensemble/slabs.py)

    def __getitem__(self, key):
        return with_retries(lambda: self.array[key], f"{self.where}: reading")

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


def open_tomogram(run, voxel_size: float, tomo_type: str) -> TomogramArray:
    """The full-resolution array (Z, Y, X) of a run's tomogram at `voxel_size` (or within 0.5% of it), opened
    read-only. Nothing is read yet; `.voxel_size` is the spacing it really has."""
    import zarr

    tomogram = find_tomogram(run, voxel_size, tomo_type)
    where = f"run {run.name}: tomogram '{tomo_type}'"
    array = with_retries(lambda: zarr.open(checked_store(tomogram.zarr(), where), mode="r")["0"], f"{where}: opening")
    return TomogramArray(array, where, float(tomogram.voxel_spacing.voxel_size))


BLOSC_HEADER = 16  # bytes: version, versionlz, flags, typesize, nbytes, blocksize, cbytes (the last three uint32 LE)


def check_blosc_chunk(data: bytes, key: str, where: str) -> None:
    """Refuse a blosc chunk whose length is not the compressed size its header states (a truncated or interrupted
    copy) before anything decodes it: blosc's decoder can crash the process on such input (numcodecs#228)."""
    if len(data) < BLOSC_HEADER:
        raise SoupError(f"{where}: chunk {key} is truncated ({len(data)} bytes, shorter than a blosc header); "
                        f"copy the tomogram again")
    stated = int.from_bytes(data[12:16], "little")
    if stated != len(data):
        raise SoupError(f"{where}: chunk {key} is corrupt or truncated ({len(data)} bytes where its header says "
                        f"{stated}); copy the tomogram again")


class CheckedStore(MutableMapping):
    """A read-only zarr 2 store that checks every blosc-compressed chunk against its header as it is read."""

    def __init__(self, store, where: str):
        self.store, self.where, self.blosc = store, where, {}

    def is_blosc(self, array_path: str) -> bool:
        if array_path not in self.blosc:
            try:
                meta = json.loads(bytes(self.store[f"{array_path}/.zarray" if array_path else ".zarray"]))
            except (KeyError, ValueError):
                meta = {}
            self.blosc[array_path] = (meta.get("compressor") or {}).get("id") == "blosc"
        return self.blosc[array_path]

    def __getitem__(self, key):
        data = self.store[key]
        name = key.rsplit("/", 1)[-1]
        if not name.startswith(".") and name != "zarr.json":
            # a chunk key ("0/0.1.2" or "0/0/1/2"); its array is the first path component (copick's scale "0")
            if self.is_blosc(key.split("/", 1)[0] if "/" in key else ""):
                check_blosc_chunk(bytes(data), key, self.where)
        return data

    def __contains__(self, key):
        return key in self.store

    def __iter__(self):
        return iter(self.store)

    def __len__(self):
        return len(self.store)

    def __setitem__(self, key, value):
        raise SoupError(f"{self.where}: opened read-only")

    def __delitem__(self, key):
        raise SoupError(f"{self.where}: opened read-only")


def checked_store(store, where: str):
    """`store` (copick's tomogram.zarr()) wrapped so that truncated chunks are refused before decoding; zarr 3
    stores (another API) are passed through as they are."""
    import zarr

    return CheckedStore(store, where) if zarr.__version__.startswith("2.") else store


def run_volume(run, voxel_size: float, tomo_type: str, echo=print, source_size: float | None = None):
    """The run's tomogram for a soup trained at `voxel_size`: the lazy array itself where the run has this type
    within 0.5% of that size (said when not exact), else a lazy view resampled from the closest size, slab by slab
    as it is read. `source_size` (pick's --voxel-size) chooses the spacing to read instead."""
    if source_size is None:
        spacings = [vs for vs in run.voxel_spacings if vs.get_tomograms(tomo_type)]
        if not spacings or near_spacings(run, voxel_size, tomo_type):
            source_size = voxel_size  # read as it is (or the error listing what the run has)
        else:
            source_size = min(spacings, key=lambda vs: abs(vs.voxel_size - voxel_size)).voxel_size
    volume = open_tomogram(run, source_size, tomo_type)
    if same_size(volume.voxel_size, voxel_size):
        if abs(volume.voxel_size - voxel_size) > 1e-3:
            echo(f"run {run.name}: reading '{tomo_type}' at {volume.voxel_size:g} Å for {voxel_size:g} Å "
                 f"({100 * abs(volume.voxel_size / voxel_size - 1):.2f}% apart: no resampling; picks are placed at "
                 f"{volume.voxel_size:g} Å)")
        return volume
    echo(f"run {run.name}: resampling '{tomo_type}' from {volume.voxel_size:g} Å to {voxel_size:g} Å (anti-aliased, "
         f"slab by slab)")
    return ResampledArray(volume, voxel_size)


class ResampledArray:
    """A lazy view of `source` (an array with a voxel size) at another voxel size: slicing it reads only the source
    planes (and rows, columns) the slice needs, plus a margin for the filter. Output voxel j samples source
    position j * to / from (voxel 0 stays at 0 Å), linearly; when the output is coarser, the source is first
    smoothed by a Gaussian of sigma (to / from - 1) / 2 source voxels against aliasing (scikit-image's rule)."""

    def __init__(self, source, voxel_size: float, source_voxel_size: float | None = None):
        self.source, self.voxel_size = source, float(voxel_size)
        self.source_voxel_size = float(source_voxel_size or source.voxel_size)
        self.scale = self.voxel_size / self.source_voxel_size
        self.sigma = max(0.0, (self.scale - 1) / 2)
        self.shape = tuple(max(int(np.floor((n - 1) / self.scale)) + 1, 1) for n in source.shape)
        self.dtype, self.ndim = np.dtype(np.float32), 3
        self.where = getattr(source, "where", "tomogram")

    def __getitem__(self, key):
        from scipy.ndimage import affine_transform, gaussian_filter

        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        out = [range(*k.indices(n)) for k, n in zip(key, self.shape)]
        if any(r.step != 1 for r in out):
            raise IndexError("ResampledArray takes slices with step 1")
        margin = int(np.ceil(4 * self.sigma)) + 1
        lo = [max(int(np.floor(r.start * self.scale)) - margin, 0) for r in out]
        hi = [min(int(np.ceil((r.stop - 1) * self.scale)) + 1 + margin, n) if len(r) else lo_
              for r, n, lo_ in zip(out, self.source.shape, lo)]
        block = np.asarray(self.source[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
        if self.sigma > 0:
            block = gaussian_filter(block, self.sigma)
        if any(len(r) == 0 for r in out) or block.size == 0:
            return np.zeros(tuple(len(r) for r in out), np.float32)
        offset = [r.start * self.scale - start for r, start in zip(out, lo)]
        return affine_transform(block, np.full(3, self.scale), offset=offset, output_shape=tuple(len(r) for r in out),
                                order=1)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


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
