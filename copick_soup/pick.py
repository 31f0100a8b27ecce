"""Picking copick runs with a loaded ensemble: the one function the CLI, the copick plugin and Ray actors call.

For each run: refuse early if its picks exist (unless overwrite); run the ensemble over it (`Ensemble.inputs`: the
members that can run; `Ensemble.stream_candidates`: streamed windows and peaks; `Ensemble.cut`: thresholds and
cross-class suppression); write all classes' picks at once.
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
from copick_soup.data.picks import existing_picks, read_picks, write_picks
from copick_soup.data.project import select_runs
from copick_soup.data.tomogram import find_voxel_spacing, run_tomo_types, same_size
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.calibrate import calibrate
from copick_soup.ensemble.overlap import cut_picks
from copick_soup.errors import AlreadyPicked, SoupError
from copick_soup.objects import classes_from_root
from copick_soup.viz import save_qc_png


@dataclass(frozen=True)
class PickOptions:
    """Where the picks go; how the ensemble runs is `InferenceSettings`."""

    user_id: str = "copick-soup"
    session_id: str = "0"
    overwrite: bool = False
    save_heatmaps: bool = False
    class_map: tuple = ()  # ((soup class, project object), ...): --class-map, completed by `resolve_classes`
    objects: tuple = ()  # soup classes to pick (--objects); empty: all
    thresholds: tuple = ()  # ((soup class, threshold), ...): --threshold, replacing the soup's
    qc: str | None = None  # a folder for one QC picture per run (--qc)
    keep_candidates: bool = True  # every peak above CANDIDATE_FLOOR, with scores, for `copick-soup threshold`
    calibrate: str = "none"  # valley: each run's thresholds from its own score distributions (ensemble/calibrate.py)
    one_class: bool = False  # one particle, one class (ensemble/overlap.py's one_class) instead of the soup's overlap

    def object_name(self, soup_class: str) -> str:
        """The project object a soup class's picks are written to."""
        return dict(self.class_map).get(soup_class, soup_class)


def check_voxel_size(voxel_size: float | None, soup) -> str | None:
    """What `--voxel-size` (the spacing to read) means for this soup (`soup`: an Ensemble or a SoupManifest):
    a line to print when the tomograms will be resampled, None when they are read as they are (InferenceSettings
    has refused a size that is not positive)."""
    if voxel_size is None or same_size(voxel_size, soup.voxel_size):
        return None
    return (f"--voxel-size {voxel_size:g}: soup '{soup.name}' was trained at {soup.voxel_size:g} Å; tomograms at "
            f"{voxel_size:g} Å are resampled to it as they are read")


# Candidate peaks are kept from this score up (or a lower pick threshold), so that any threshold above it can be
# applied later without running the networks again (`rethreshold_run`); below it a heatmap is noise.
CANDIDATE_FLOOR = 0.05


def candidates_user(user_id: str) -> str:
    """The copick user that holds a pick user's candidate peaks: its own user, so that scoring `user_id` in any
    session never counts them."""
    return f"{user_id}-candidates"


def pick_run(run, ensemble: Ensemble, settings: InferenceSettings, opts: PickOptions = PickOptions(), echo=print,
             progress=None) -> dict:
    """Pick one run and write its picks; returns {run, processed, picks: {class: n}, members, seconds}."""
    start = time.perf_counter()
    names = list(opts.objects) or ensemble.class_names
    taken = existing_picks(run, [opts.object_name(n) for n in names], opts.user_id, opts.session_id)
    if taken and not opts.overwrite:
        raise AlreadyPicked(f"run {run.name}: picks by user '{opts.user_id}' session '{opts.session_id}' already "
                            f"exist for {', '.join(taken)}; pass --overwrite to replace them")
    sources = ensemble.inputs(run, settings, echo)
    shape = tuple(sources[0].volume.shape)
    heat = np.zeros((len(ensemble.classes), *shape), dtype=np.uint8) if opts.save_heatmaps else None

    def keep(chunk):  # 0-255 for heat 0-1: a byte per voxel while the run is picked
        heat[chunk.index()] = np.clip(chunk.host() * 255, 0, 255).astype(np.uint8)

    tiling = ensemble.tiling(shape, settings)
    echo(f"run {run.name}: {tiling.describe(shape)}")
    if progress:
        progress(start=tiling.count(shape))
    thresholds = {**ensemble.thresholds, **dict(opts.thresholds)}
    floor = {name: min(CANDIDATE_FLOOR, t) for name, t in thresholds.items()}
    candidates = ensemble.stream_candidates(sources, settings, floor, progress,
                                            on_chunk=keep if heat is not None else None, tiling=tiling)
    thresholds = run_thresholds(run.name, candidates, thresholds, opts, echo)
    picks = ensemble.cut(candidates, thresholds, opts.one_class)
    if opts.keep_candidates:  # first: the picks, written last, mark the run done
        write_picks(run, {opts.object_name(n): found for n, found in candidates.items()},
                    candidates_user(opts.user_id), opts.session_id, overwrite=True)
    write_picks(run, {opts.object_name(n): picks[n] for n in names}, opts.user_id, opts.session_id,
                overwrite=opts.overwrite)
    if heat is not None:
        save_heatmaps(run, ensemble, heat, opts)
    if opts.qc:
        volume = sources[0].volume
        save_qc_png(volume, Path(opts.qc) / f"{run.name}.png", getattr(volume, "voxel_size", ensemble.voxel_size),
                    ensemble.classes, {n: positions for n, (positions, _) in picks.items()}, candidates, thresholds,
                    title=f"run {run.name}: soup '{ensemble.name}'")
    return dict(run=run.name, processed=True, picks={n: len(picks[n][0]) for n in names},
                members=len(sources), seconds=time.perf_counter() - start, error=None)


def run_thresholds(run_name: str, candidates: dict, thresholds: dict, opts: PickOptions, echo=print) -> dict:
    """The thresholds a run's picks are cut at: `thresholds`, or with `--calibrate valley` the run's own valleys
    (classes given by hand kept), said in one line."""
    if opts.calibrate != "valley":
        return thresholds
    thresholds, line = calibrate(candidates, thresholds, keep=dict(opts.thresholds), where=f"run {run_name}: ")
    echo(line)
    return thresholds


def heatmap_name(opts: PickOptions, object_name: str) -> str:
    """The tomogram type a class's heatmap is stored as (`--save-heatmaps`)."""
    return f"heatmap-{object_name}-{opts.user_id}-{opts.session_id}"


def save_heatmaps(run, ensemble: Ensemble, heat: np.ndarray, opts: PickOptions) -> None:
    """The ensemble heatmaps as copick tomograms, one per class (`heatmap_name`), float values 0-1 in steps of
    1/255: napari-copick and ChimeraX show tomograms as intensities (a segmentation they colour as labels)."""
    spacing = find_voxel_spacing(run, ensemble.voxel_size)
    for c, cls in enumerate(ensemble.classes):
        name = heatmap_name(opts, opts.object_name(cls.name))
        if spacing.get_tomograms(name) and not opts.overwrite:
            raise SoupError(f"run {run.name}: a heatmap '{name}' exists; pass --overwrite to replace it")
        tomogram = spacing.new_tomogram(tomo_type=name, exist_ok=True)
        tomogram.from_numpy(heat[c].astype(np.float32) / 255, dtype=np.float32)


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
    return run_batch(runs, lambda run, progress: pick_run(run, ensemble, settings, opts, echo, progress), echo,
                     progress_factory, error_log)


def run_batch(runs, work, echo=print, progress_factory=None, error_log=None) -> list[dict]:
    """`work(run, progress)` on every run, one result each (see `pick_runs`); a run's error is its own."""
    results = []
    for run in runs:
        progress = progress_factory(run.name) if progress_factory else None
        try:
            results.append(dict(work(run, progress), status="picked"))
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


def read_candidates(run, classes, opts: PickOptions) -> dict:
    """{soup class: (positions, scores)} of the candidate peaks `pick` kept on a run."""
    user = candidates_user(opts.user_id)
    objects = [opts.object_name(c.name) for c in classes]
    if not existing_picks(run, objects, user, opts.session_id):
        raise SoupError(f"run {run.name}: no candidate peaks by user '{user}' session '{opts.session_id}'; pick it "
                        f"first (copick-soup pick keeps them)")
    found = read_picks(run, objects, user, opts.session_id, with_scores=True)
    return {c.name: found[o] for c, o in zip(classes, objects)}


def pooled_valley(runs, classes, thresholds: dict, opts: PickOptions, echo=print) -> dict:
    """`thresholds` with each class's moved to the valley of its candidate scores over all these runs together
    (one microscope, one setting: more particles than any one run shows); classes given by hand are kept."""
    scores = {c.name: [] for c in classes}
    for run in runs:
        for name, (_, found) in read_candidates(run, classes, opts).items():
            scores[name].append(np.asarray(found))
    pooled = {n: (None, np.concatenate(s) if s else np.zeros(0)) for n, s in scores.items()}
    values, line = calibrate(pooled, thresholds, keep=dict(opts.thresholds), where=f"{len(runs)} runs pooled: ")
    echo(line)
    return values


def rethreshold_run(run, classes, thresholds: dict, overlap: float, opts: PickOptions, echo=print) -> dict:
    """Rewrite a run's picks from the candidate peaks `pick` kept, at new thresholds (or this run's valley
    thresholds, with opts.calibrate), without any network: the same points a fresh pick at those thresholds gives
    (overlap.cut_picks)."""
    start = time.perf_counter()
    names = list(opts.objects) or [c.name for c in classes]
    candidates = read_candidates(run, classes, opts)
    thresholds = run_thresholds(run.name, candidates, thresholds, opts, echo)
    picks = cut_picks(candidates, classes, thresholds, overlap, opts.one_class)
    write_picks(run, {opts.object_name(n): picks[n] for n in names}, opts.user_id, opts.session_id, overwrite=True)
    return dict(run=run.name, processed=True, picks={n: len(picks[n][0]) for n in names}, members=0,
                seconds=time.perf_counter() - start, error=None)


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
    printed, and --objects (soup classes or the objects they map to) as soup classes; before any run starts, so
    that a mismatch is found now, not after the inference."""
    given = dict(opts.class_map)
    mapping = map_classes(classes, classes_from_root(root), given)
    for line in mapping_lines(classes, mapping, given):
        echo(line)
    return replace(opts, class_map=tuple(mapping.items()), objects=tuple(choose_classes(opts.objects, mapping)))


def choose_classes(objects, mapping: dict) -> list[str]:
    """--objects as soup class names (each given as a soup class or as the project object it maps to)."""
    by_object = {v: k for k, v in mapping.items()}
    unknown = [o for o in objects if o not in mapping and o not in by_object]
    if unknown:
        raise SoupError(f"--objects: the soup has no class '{unknown[0]}'; its classes are {', '.join(mapping)}")
    return [o if o in mapping else by_object[o] for o in objects]


def parse_thresholds(pairs, classes) -> dict:
    """['ribosome=0.4', ...] (repeated or comma-joined) -> {class: threshold}, each a soup class, in [0, 1]."""
    names = [c.name for c in classes]
    out = {}
    for pair in (p.strip() for item in pairs or () for p in str(item).split(",") if p.strip()):
        name, sep, value = (s.strip() for s in pair.partition("="))
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or name not in names or number is None or not 0 <= number <= 1:
            problem = (f"the soup has no class '{name}'; its classes are {', '.join(names)}" if sep and name not in
                       names else "expected CLASS=VALUE with VALUE in [0, 1]")
            raise SoupError(f"--threshold {pair}: {problem}")
        out[name] = number
    return out


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
            lines.append(row(r["run"], [r["picks"].get(n, "-") for n in names]) + f"{r['seconds']:>9.1f}")
        elif r.get("status") == "done before":
            lines.append(f"{r['run']:<{width}}  done before (picks exist; --overwrite to pick again)")
        else:
            lines.append(f"{r['run']:<{width}}  failed: {r['error']}")
    done = [r for r in results if r["processed"]]
    lines.append("-" * len(head))
    lines.append(row("total", [sum(r["picks"].get(n, 0) for r in done) for n in names]))
    lines.append(f"{len(done)} of {len(results)} run(s) picked")
    return "\n".join(lines)
