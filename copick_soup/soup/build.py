"""`copick-soup soup`: search weights and thresholds for a set of members and write the soup manifest."""

from __future__ import annotations

from pathlib import Path

from copick_soup.data import open_project, select_runs
from copick_soup.errors import SoupError
from copick_soup.soup.manifest import LoadedSoup, check_compatible, member_paths, write_soup
from copick_soup.soup.search import load_val_runs, search


def load_members(paths, device: str = "cpu") -> LoadedSoup:
    from copick_soup.model.checkpoint import load_member
    from copick_soup.objects import ParticleClass

    members = [(*load_member(p, device), 1.0) for p in paths]
    check_compatible([m for _, m, _ in members])
    first = members[0][1]
    classes = [ParticleClass(c["name"], int(c["label"]), float(c["radius"]), float(c.get("score_weight", 1.0)))
               for c in first["classes"]]
    return LoadedSoup("members", members, classes, float(first["voxel_size"]), {})


def build_soup(config, member_sources, val_runs, out, truth_user="curation", truth_session="0", step=0.25,
               window=64, overlap=0.25, tta=1, device="cpu", name=None, echo=print) -> Path:
    """Search on the validation runs and write OUT/soup.json (members referenced, not copied)."""
    paths = [p for source in member_sources for p in member_paths(source)]
    if not paths:
        raise SoupError("--members: no members given")
    soup = load_members(paths, device)
    root = open_project(config)
    project_names = [o.name for o in root.pickable_objects if o.is_particle]
    missing = [c.name for c in soup.classes if c.name not in project_names]
    if missing:
        raise SoupError(f"{config}: the members' class(es) {', '.join(missing)} are not objects of this project")
    if not val_runs:
        raise SoupError("--val-runs: name the validation runs (they need ground truth)")
    val = load_val_runs(root, select_runs(root, val_runs), soup, truth_user, truth_session, window, overlap, tta,
                        device, echo)
    found = search(val, soup.classes, soup.voxel_size, len(paths), step, echo=echo)
    best = found["best"]
    out = Path(out)
    singles = {Path(paths[r["weights"].index(1.0)]).stem: dict(score=r["score"], per_class=r["per_class"])
               for r in found["singles"]}
    return write_soup(out / "soup.json", list(zip(paths, best["weights"])), soup.classes, soup.voxel_size,
                      best["thresholds"], name=name or out.name,
                      validation=dict(runs=[v.name for v in val], score=best["score"], per_class=best["per_class"],
                                      members=singles, step=step, tried=found["tried"], tta=tta))
