"""Picking copick runs with a loaded ensemble: the one function the CLI, the copick plugin and Ray actors call.

For each run: refuse early if its picks exist (unless overwrite); run the ensemble over it (`Ensemble.inputs`: the
members that can run; `Ensemble.stream_picks`: streamed windows, peaks, cross-class suppression); write all
classes' picks at once.
A bad run raises `SoupError`; `pick_runs` records it and goes on.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from copick_soup.data.classes import map_classes, mapping_lines
from copick_soup.data.kinds import check_tomo_map, reading_lines
from copick_soup.data.picks import existing_picks, write_picks
from copick_soup.data.project import select_runs
from copick_soup.data.tomogram import find_voxel_spacing, run_tomo_types, same_size
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.windows import count_windows
from copick_soup.errors import AlreadyPicked, SoupError
from copick_soup.objects import classes_from_root


@dataclass(frozen=True)
class PickOptions:
    """Where the picks go; how the ensemble runs is `InferenceSettings`."""

    user_id: str = "copick-soup"
    session_id: str = "0"
    overwrite: bool = False
    save_heatmaps: bool = False
    class_map: tuple = ()  # ((soup class, project object), ...): --class-map, completed by `resolve_classes`

    def object_name(self, soup_class: str) -> str:
        """The project object a soup class's picks are written to."""
        return dict(self.class_map).get(soup_class, soup_class)


def check_voxel_size(voxel_size: float | None, soup) -> str | None:
    """What `--voxel-size` (the spacing to read) means for this soup (`soup`: an Ensemble or a SoupManifest):
    a line to print when the tomograms will be resampled, None when they are read as they are."""
    if voxel_size is None:
        return None
    if not voxel_size > 0:
        raise SoupError(f"--voxel-size {voxel_size:g}: must be a positive size in Å")
    if same_size(voxel_size, soup.voxel_size):
        return None
    return (f"--voxel-size {voxel_size:g}: soup '{soup.name}' was trained at {soup.voxel_size:g} Å; tomograms at "
            f"{voxel_size:g} Å are resampled to it as they are read")


def pick_run(run, ensemble: Ensemble, settings: InferenceSettings, opts: PickOptions = PickOptions(), echo=print,
             progress=None) -> dict:
    """Pick one run and write its picks; returns {run, processed, picks: {class: n}, members, seconds}."""
    start = time.perf_counter()
    names = ensemble.class_names
    taken = existing_picks(run, [opts.object_name(n) for n in names], opts.user_id, opts.session_id)
    if taken and not opts.overwrite:
        raise AlreadyPicked(f"run {run.name}: picks by user '{opts.user_id}' session '{opts.session_id}' already "
                            f"exist for {', '.join(taken)}; pass --overwrite to replace them")
    sources = ensemble.inputs(run, settings, echo)
    shape = tuple(sources[0].volume.shape)
    heat = np.zeros((len(names), *shape), dtype=np.uint8) if opts.save_heatmaps else None

    def keep(chunk):  # 0-255 for heat 0-1
        heat[:, chunk.z0:chunk.z0 + chunk.planes.shape[1]] = np.clip(chunk.planes * 255, 0, 255).astype(np.uint8)

    if progress:
        progress(start=count_windows(shape, settings.window, settings.overlap))
    picks = ensemble.stream_picks(sources, settings, progress, on_chunk=keep if heat is not None else None)
    write_picks(run, {opts.object_name(n): found for n, found in picks.items()}, opts.user_id, opts.session_id,
                overwrite=opts.overwrite)
    if heat is not None:
        save_heatmaps(run, ensemble, heat, opts)
    return dict(run=run.name, processed=True, picks={n: len(picks[n][0]) for n in names},
                members=len(sources), seconds=time.perf_counter() - start, error=None)


def save_heatmaps(run, ensemble: Ensemble, heat: np.ndarray, opts: PickOptions) -> None:
    """The ensemble heatmaps as copick segmentations, one per class, uint8 (0-255 = heat 0-1)."""
    spacing = find_voxel_spacing(run, ensemble.voxel_size)  # the segmentation needs the voxel spacing to exist
    for c, cls in enumerate(ensemble.classes):
        seg = run.new_segmentation(voxel_size=spacing.voxel_size, name=opts.object_name(cls.name),
                                   session_id=opts.session_id, is_multilabel=False, user_id=opts.user_id,
                                   exist_ok=opts.overwrite)
        seg.from_numpy(heat[c], dtype=np.uint8)


def pick_runs(root, ensemble: Ensemble, run_names, settings: InferenceSettings, opts: PickOptions = PickOptions(),
              echo=print, progress_factory=None, error_log=None) -> list[dict]:
    """Pick every chosen run; returns one result per run, its `status` "picked", "done before" (picks by this user
    and session exist) or "failed" (with the reason in `error`). Any error in one run is that run's failure and the
    others go on; unexpected ones (not bad input: an out-of-memory error, a bug) have their traceback appended to
    `error_log` (default: a file in the temporary folder, named on screen). A window the members cannot run, a
    --tomo-map or a class that matches nothing, is refused before any run starts."""
    warning = settings.check_members(ensemble.manifests)
    if warning:
        echo(warning)
    opts = resolve_classes(root, ensemble.classes, opts, echo)
    runs = select_runs(root, run_names)
    announce_reading(runs, ensemble.manifests, settings, echo)
    results = []
    for run in runs:
        progress = progress_factory(run.name) if progress_factory else None
        try:
            results.append(dict(pick_run(run, ensemble, settings, opts, echo, progress), status="picked"))
        except AlreadyPicked as err:
            echo(f"done before: {err}")
            results.append(run_result(run.name, "done before", str(err)))
        except SoupError as err:
            echo(f"failed: {err}")
            results.append(run_result(run.name, "failed", str(err)))
        except Exception as err:  # noqa: BLE001 - whatever one run raises, the batch goes on
            log = log_traceback(run.name, err, error_log)
            echo(f"failed: run {run.name}: {type(err).__name__}: {err} (traceback in {log})")
            results.append(run_result(run.name, "failed", f"{type(err).__name__}: {err}"))
        finally:
            if progress:
                progress(close=True)
    return results


def run_result(name: str, status: str, error: str) -> dict:
    return dict(run=name, processed=False, status=status, picks={}, members=0, seconds=0.0, error=error)


def log_traceback(run_name: str, err: BaseException, path=None) -> Path:
    """Append `err`'s traceback to `path` (default: copick-soup-errors-PID.log in the temporary folder)."""
    path = Path(path or Path(tempfile.gettempdir()) / f"copick-soup-errors-{os.getpid()}.log")
    with open(path, "a") as log:
        log.write(f"--- run {run_name}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
    return path


def resolve_classes(root, classes, opts: PickOptions, echo=print) -> PickOptions:
    """`opts` with every soup class mapped to one of the project's particle objects (data/classes.py), the mapping
    printed; before any run starts, so that a mismatch is found now, not after the inference."""
    given = dict(opts.class_map)
    mapping = map_classes(classes, classes_from_root(root), given)
    for line in mapping_lines(classes, mapping, given):
        echo(line)
    return replace(opts, class_map=tuple(mapping.items()))


def announce_reading(runs, manifests, settings: InferenceSettings, echo=print) -> None:
    """Before any inference: refuse a --tomo-map naming what does not exist, and say which tomogram each member
    will read on the first run."""
    if settings.tomo_map:
        check_tomo_map(settings.tomo_mapping, [m.tomo_type for m in manifests],
                       {run.name: run_tomo_types(run) for run in runs})
    if runs:
        echo(f"run {runs[0].name}:")
        for line in reading_lines(manifests, run_tomo_types(runs[0]), settings.tomo_mapping, settings.tomo_type):
            echo(line)


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
        elif r.get("status") == "done before":
            lines.append(f"{r['run']:<{width}}  done before (picks exist; --overwrite to pick again)")
        else:
            lines.append(f"{r['run']:<{width}}  failed: {r['error']}")
    done = [r for r in results if r["processed"]]
    lines.append("-" * len(head))
    lines.append(row("total", [sum(r["picks"][n] for r in done) for n in names]))
    lines.append(f"{len(done)} of {len(results)} run(s) picked")
    return "\n".join(lines)
