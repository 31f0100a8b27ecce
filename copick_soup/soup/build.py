"""`copick-soup soup`: search weights and thresholds for a set of members and write the soup manifest."""

from __future__ import annotations

from pathlib import Path

from copick_soup.data import open_project, select_runs
from copick_soup.errors import SoupError
from copick_soup.infer.pick import check_window
from copick_soup.soup.manifest import LoadedSoup, member_paths, write_soup
from copick_soup.soup.manifest import load_members as manifest_load_members
from copick_soup.soup.search import check_step, load_val_runs, search


def load_members(paths, device: str = "cpu") -> LoadedSoup:
    """Members with equal weights and no thresholds yet: what the search starts from."""
    members, classes, voxel_size = manifest_load_members(paths, [1.0] * len(paths), device)
    return LoadedSoup("members", members, classes, voxel_size, {})


def merge_groups(root, paths, kind: str, val_runs, truth_user, truth_session, out: Path, device="cpu",
                 echo=print) -> list[Path]:
    """Replace each group of members with the same variant and tomogram type by its weight-space soup."""
    from copick_soup.objects import classes_from_root
    from copick_soup.soup.weights import group_members, weight_soup
    from copick_soup.train.config import TrainConfig
    from copick_soup.train.dataset import load_volumes
    from copick_soup.train.loop import validate

    merged = []
    for (variant, tomo_type), group in group_members(paths).items():
        if len(group) == 1:
            merged += group
            continue
        score = None
        if kind == "greedy":
            first = load_members(group[:1]).members[0][1]
            classes, voxel_size = classes_from_root(root), float(first["voxel_size"])
            volumes = load_volumes(root, val_runs, [tomo_type], classes, voxel_size, truth_user, truth_session,
                                   warn=echo)
            cfg = TrainConfig()

            def score(model, volumes=volumes, classes=classes, cfg=cfg, voxel_size=voxel_size):
                return validate(model.to(device), volumes, classes, cfg, voxel_size, device)[0].weighted

        merged.append(weight_soup(group, out / "merged" / f"{variant}-{tomo_type}-{kind}", kind, score, echo))
    return merged


def build_soup(config, member_sources, val_runs, out, truth_user="curation", truth_session="0", step=0.25,
               window=64, overlap=0.25, tta=1, device="cpu", name=None, weight_soup="none", tolerance=0.01,
               amp="auto", echo=print) -> Path:
    """Search on the validation runs and write OUT/soup.json (members referenced, not copied).

    With `weight_soup` uniform or greedy, members of the same variant and tomogram type (fold or seed
    fine-tunes) are first averaged into one member each, under OUT/merged."""
    paths = [p for source in member_sources for p in member_paths(source)]
    if not paths:
        raise SoupError("--members: no members given")
    check_step(step)  # the options first: the heatmaps take minutes
    if not tolerance >= 0:
        raise SoupError(f"--tolerance {tolerance:g}: must be >= 0 (an F4 difference)")
    root = open_project(config)
    if weight_soup != "none":
        paths = merge_groups(root, paths, weight_soup, select_runs(root, val_runs), truth_user, truth_session,
                             Path(out), device, echo)
    soup = load_members(paths, device)
    warning = check_window([manifest for _, manifest, _ in soup.members], window)
    if warning:
        echo(warning)
    project_names = [o.name for o in root.pickable_objects if o.is_particle]
    missing = [c.name for c in soup.classes if c.name not in project_names]
    if missing:
        raise SoupError(f"{config}: the members' class(es) {', '.join(missing)} are not objects of this project")
    if not val_runs:
        raise SoupError("--val-runs: name the validation runs (they need ground truth)")
    val = load_val_runs(root, select_runs(root, val_runs), soup, truth_user, truth_session, window, overlap, tta,
                        device, amp, echo)
    found = search(val, soup.classes, soup.voxel_size, len(paths), step, tolerance=tolerance, echo=echo)
    best = found["best"]
    out = Path(out)
    singles = {Path(paths[r["weights"].index(1.0)]).stem: dict(score=r["score"], per_class=r["per_class"],
                                                               thresholds=r["thresholds"])
               for r in found["singles"]}
    return write_soup(out / "soup.json", list(zip(paths, best["weights"])), soup.classes, soup.voxel_size,
                      best["thresholds"], name=name or out.name, overlap=best["overlap"],
                      validation=dict(runs=[v.name for v in val], score=best["score"], per_class=best["per_class"],
                                      overlap_scores=best["overlap_scores"],
                                      members=singles, step=step, tried=found["tried"], tta=tta, tolerance=tolerance,
                                      weight_soup=weight_soup, amp=amp))
