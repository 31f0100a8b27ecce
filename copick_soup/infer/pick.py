"""Picking a copick run with a loaded soup: the one function the CLI, the copick plugin and Ray actors call.

For each run: refuse early if its picks exist (unless overwrite); choose the members whose tomogram type the
run has (renormalising their weights); stream windows through every member, blend, and find peaks as planes
complete; drop cross-class overlaps if the soup says so; write all classes' picks at once. A bad run raises
`SoupError`; `pick_runs` records it and goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from copick_soup.data.picks import existing_picks, write_picks
from copick_soup.data.project import list_names, select_runs
from copick_soup.data.tomogram import find_voxel_spacing, open_tomogram
from copick_soup.errors import SoupError
from copick_soup.infer.windows import Source, TorchPredictor, count_windows, stream_heatmaps
from copick_soup.peaks.nms import peak_stream
from copick_soup.peaks.overlap import suppress_overlaps


@dataclass(frozen=True)
class PickOptions:
    user_id: str = "copick-soup"
    session_id: str = "0"
    tomo_type: str | None = None  # read this type with every member instead of each member's own
    tta: int = 1  # test-time augmentation views, 1-8
    window: int = 64
    overlap: float = 0.25
    batch_size: int | None = None  # windows per network call; None: 1 on a CPU, 4 on a GPU
    device: str = "cpu"
    amp: str = "auto"  # autocast: auto (bf16 where the device has it natively), none, bf16, fp16
    overwrite: bool = False
    save_heatmaps: bool = False


def check_window(manifests: list[dict], window: int) -> str | None:
    """Refuse a window some member cannot run (each U-Net level halves it); return a warning for one smaller than
    the patches the members were trained on, where particles lose the context the network learnt from."""
    from copick_soup.model import model_config

    unets = {m["architecture"]["name"]: model_config(m["architecture"]["name"], **m["architecture"]["config"])
             for m in manifests}
    deepest = max(unets.values(), key=lambda u: u.divisor)  # divisors are powers of 2: the largest fits them all
    if window < deepest.divisor or window % deepest.divisor:
        raise SoupError(f"--window {window}: this soup's members ({', '.join(sorted(unets))}) need a multiple of "
                        f"{deepest.divisor}; {deepest.sizes_near(window)}")
    patch = max((m.get("training", {}).get("config", {}).get("patch") or 0 for m in manifests), default=0)
    if window < patch:
        return (f"warning: --window {window} is smaller than the {patch}-voxel patches the members were trained on; "
                f"particles near window borders lose context and picks suffer")
    return None


def run_volume(run, voxel_size: float, tomo_type: str, echo=print):
    """The run's tomogram at the soup's voxel size; another voxel size is resampled (linear) in memory."""
    spacings = [vs for vs in run.voxel_spacings if vs.get_tomograms(tomo_type)]
    if not spacings or any(abs(vs.voxel_size - voxel_size) < 1e-3 for vs in spacings):
        return open_tomogram(run, voxel_size, tomo_type)  # or its error, which lists what the run has
    source = min(spacings, key=lambda vs: abs(vs.voxel_size - voxel_size))  # closest size that has this type
    echo(f"run {run.name}: resampling '{tomo_type}' from {source.voxel_size:g} Å to {voxel_size:g} Å")
    return resample(open_tomogram(run, source.voxel_size, tomo_type)[:], source.voxel_size, voxel_size)


def resample(volume: np.ndarray, from_size: float, to_size: float) -> np.ndarray:
    """Linear resampling that keeps voxel 0 at 0 Å: output voxel j samples input position j * to / from."""
    from scipy.ndimage import affine_transform

    scale = to_size / from_size
    shape = tuple(max(int(np.floor((n - 1) / scale)) + 1, 1) for n in volume.shape)
    return affine_transform(volume.astype(np.float32), np.full(3, scale), output_shape=shape, order=1)


def member_sources(run, soup, opts: PickOptions, echo=print) -> list[Source]:
    """Inputs for the members that can run on this run; the rest are left out (and said so)."""
    from copick_soup.infer.tta import tta_views
    from copick_soup.train.loop import amp_dtype

    views = tta_views(opts.tta)
    sources, missing = [], []
    members = [m for m in soup.members if m[2] > 0]  # a searched soup may give some members weight 0
    have = {t.tomo_type for vs in run.voxel_spacings for t in vs.tomograms}
    for model, manifest, weight in members:
        tomo_type = opts.tomo_type or manifest["tomo_type"]
        if tomo_type not in have:
            missing.append(tomo_type)
            continue
        volume = run_volume(run, soup.voxel_size, tomo_type, echo)  # a type that is here but unreadable fails
        predictor = TorchPredictor(model, opts.device, amp_dtype(opts.amp, opts.device), views)
        sources.append(Source(predictor, volume, weight))
    if not sources and len(members) < len(soup.members):
        echo(f"run {run.name}: no member with a soup weight can run here; using the others with equal weights")
        spare = replace(soup, members=[(m, f, 1.0) for m, f, w in soup.members if w == 0])
        return member_sources(run, spare, opts, echo)
    if not sources:
        raise SoupError(f"run {run.name}: none of the soup's tomogram types ({list_names(sorted(set(missing)))}) "
                        f"is here; it has {list_names(sorted(have))}")
    if missing:
        echo(f"run {run.name}: using {len(sources)} of {len(members)} members (no "
             f"{', '.join(sorted(set(missing)))} here); their weights are renormalised")
    return sources


def pick_run(run, soup, opts: PickOptions, echo=print, progress=None) -> dict:
    """Pick one run and write its picks; returns {run, processed, picks: {class: n}, members, seconds}."""
    start = time.perf_counter()
    names = [c.name for c in soup.classes]
    taken = existing_picks(run, names, opts.user_id, opts.session_id)
    if taken and not opts.overwrite:
        raise SoupError(f"run {run.name}: picks by user '{opts.user_id}' session '{opts.session_id}' already exist "
                        f"for {', '.join(taken)}; pass --overwrite to replace them")
    sources = member_sources(run, soup, opts, echo)
    shape = tuple(sources[0].volume.shape)
    peaks = peak_stream(soup.classes, soup.voxel_size, soup.thresholds, shape[0], soup.nms_scale, opts.device)
    heat = np.zeros((len(names), *shape), dtype=np.uint8) if opts.save_heatmaps else None
    if progress:
        progress(start=count_windows(shape, opts.window, opts.overlap))
    for z0, planes in stream_heatmaps(sources, len(names), opts.window, opts.overlap, opts.batch_size,
                                      progress=progress, dtype=np.float16, device=opts.device):
        peaks.add(z0, planes)
        if heat is not None:
            heat[:, z0:z0 + planes.shape[1]] = np.clip(planes * 255, 0, 255).astype(np.uint8)
    picks = suppress_overlaps(peaks.picks(), soup.classes, soup.overlap)
    write_picks(run, picks, opts.user_id, opts.session_id, overwrite=opts.overwrite)
    if heat is not None:
        save_heatmaps(run, soup, heat, opts)
    return dict(run=run.name, processed=True, picks={n: len(picks[n][0]) for n in names},
                members=len(sources), seconds=time.perf_counter() - start, error=None)


def save_heatmaps(run, soup, heat: np.ndarray, opts: PickOptions) -> None:
    """The ensemble heatmaps as copick segmentations, one per class, uint8 (0-255 = heat 0-1)."""
    find_voxel_spacing(run, soup.voxel_size)  # the segmentation needs the voxel spacing to exist
    for c, cls in enumerate(soup.classes):
        seg = run.new_segmentation(voxel_size=soup.voxel_size, name=cls.name, session_id=opts.session_id,
                                   is_multilabel=False, user_id=opts.user_id, exist_ok=opts.overwrite)
        seg.from_numpy(heat[c], dtype=np.uint8)


def pick_runs(root, soup, run_names, opts: PickOptions, echo=print, progress_factory=None) -> list[dict]:
    """Pick every chosen run; a run that fails is reported (with its reason) and the others go on. A window the
    members cannot run is refused before any run starts."""
    warning = check_window([manifest for _, manifest, _ in soup.members], opts.window)
    if warning:
        echo(warning)
    results = []
    for run in select_runs(root, run_names):
        progress = progress_factory(run.name) if progress_factory else None
        try:
            results.append(pick_run(run, soup, opts, echo, progress))
        except SoupError as err:
            echo(f"skipped: {err}")
            results.append(dict(run=run.name, processed=False, picks={}, members=0, seconds=0.0, error=str(err)))
        finally:
            if progress:
                progress(close=True)
    return results


def summary_table(results: list[dict], classes) -> str:
    """Picks per class and run, with a total row and the reasons for skipped runs."""
    names = [c.name for c in classes]
    width = max([len("run")] + [len(r["run"]) for r in results]) + 2
    cols = [max(len(n), 6) + 2 for n in names]  # whole class names: a lab's own targets may share a prefix

    def row(label, counts):
        return f"{label:<{width}}" + "".join(f"{n:>{w}}" for n, w in zip(counts, cols))

    head = row("run", names) + f"{'seconds':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        if r["processed"]:
            lines.append(row(r["run"], [r["picks"][n] for n in names]) + f"{r['seconds']:>9.1f}")
        else:
            lines.append(f"{r['run']:<{width}}  skipped: {r['error']}")
    done = [r for r in results if r["processed"]]
    lines.append("-" * len(head))
    lines.append(row("total", [sum(r["picks"][n] for r in done) for n in names]))
    lines.append(f"{len(done)} of {len(results)} run(s) picked")
    return "\n".join(lines)
