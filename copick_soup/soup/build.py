"""`copick-soup soup`: search weights and thresholds for a set of members and write the soup manifest."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from copick_soup.data.classes import map_classes, mapping_lines
from copick_soup.data.project import open_project, select_runs
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import load_val_runs, sweep
from copick_soup.errors import SoupError
from copick_soup.model.average import group_members, weight_soup
from copick_soup.model.manifest import MemberManifest, SoupManifest, SoupMember, member_paths
from copick_soup.objects import classes_from_root
from copick_soup.soup.search import check_step, search


def merge_groups(root, paths, kind: str, val_runs, settings: InferenceSettings, truth_user, truth_session,
                 out: Path, echo=print) -> list[Path]:
    """Replace each group of members with the same variant and tomogram type by its weight-space soup; a greedy
    soup scores its candidates on the validation runs with the search's own settings."""
    merged = []
    for (variant, tomo_type), group in group_members(paths).items():
        if len(group) == 1:
            merged += group
            continue
        score = None
        if kind == "greedy":
            classes, voxel_size = classes_from_root(root), MemberManifest.read(group[0]).voxel_size

            def score(model, classes=classes, voxel_size=voxel_size, tomo_type=tomo_type):
                ensemble = Ensemble.of_model(model.to(settings.device), classes, voxel_size, tomo_type)
                val = load_val_runs(root, val_runs, ensemble, settings, truth_user, truth_session, echo)
                return sweep(ensemble, val, (1.0,))[1].weighted

        merged.append(weight_soup(group, out / "merged" / f"{variant}-{tomo_type}-{kind}", kind, score, echo))
    return merged


def build_soup(config, member_sources, val_runs, out, settings: InferenceSettings | None = None,
               truth_user="curation", truth_session="0", step=0.25, name=None, weight_soup="none", tolerance=0.01,
               echo=print, class_map: dict | None = None, progress=None) -> Path:
    """Search on the validation runs and write OUT/soup.json (members referenced, not copied).

    With `weight_soup` uniform or greedy, members of the same variant and tomogram type (fold or seed
    fine-tunes) are first averaged into one member each, under OUT/merged. `progress(n)`: called as each n windows
    of the members' heatmaps are done."""
    settings = settings or InferenceSettings()
    paths = [p for source in member_sources for p in member_paths(source)]
    if not paths:
        raise SoupError("--members: no members given")
    check_step(step)  # the options first: the heatmaps take minutes
    if not tolerance >= 0:
        raise SoupError(f"--tolerance {tolerance:g}: must be >= 0 (an F4 difference)")
    warning = settings.check_members([MemberManifest.read(p) for p in paths])
    if warning:
        echo(warning)
    root = open_project(config)
    if not val_runs:
        raise SoupError("--val-runs: name the validation runs (they need ground truth)")
    runs = select_runs(root, val_runs)
    if weight_soup != "none":
        paths = merge_groups(root, paths, weight_soup, runs, settings, truth_user, truth_session, Path(out), echo)
    ensemble = Ensemble.of_members(paths, settings.device)
    objects = classes_from_root(root)
    mapping = map_classes(ensemble.classes, objects, class_map)
    for line in mapping_lines(ensemble.classes, mapping, class_map):
        echo(line)
    val = load_val_runs(root, runs, ensemble, settings, truth_user, truth_session, echo, mapping, progress)
    found = search(ensemble, val, step, tolerance=tolerance, echo=echo)
    best, out = found["best"], Path(out)
    singles = {Path(paths[r["weights"].index(1.0)]).stem: dict(score=r["score"], per_class=r["per_class"],
                                                               thresholds=r["thresholds"])
               for r in found["singles"]}
    validation = dict(runs=[v.name for v in val], score=best["score"], per_class=best["per_class"],
                      overlap_scores=best["overlap_scores"], members=singles, step=step, tried=found["tried"],
                      tta=settings.tta, tolerance=tolerance, weight_soup=weight_soup, amp=settings.amp,
                      window=settings.window, overlap=settings.overlap)
    # the soup records each class's identifier (GO / UniProt) where the project has one, so that portal-made
    # projects, which name the same targets differently, find them (data/classes.py)
    identifiers = {o.name: o.identifier for o in objects}
    classes = [replace(c, identifier=c.identifier or identifiers.get(mapping[c.name])) for c in ensemble.classes]
    soup = SoupManifest(name or out.name, [SoupMember(Path(p), w) for p, w in zip(paths, best["weights"])],
                        classes, ensemble.voxel_size, best["thresholds"], ensemble.nms_scale,
                        best["overlap"], validation)
    return soup.write(out / "soup.json")
