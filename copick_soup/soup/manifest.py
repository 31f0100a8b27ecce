"""Soups on disk, and finding members.

A soup manifest (`soup.json`, format copick-soup-soup/1) lists member manifests (paths relative to it) with
their ensemble weights, plus the per-class peak thresholds, the classes and the voxel size. `pick` accepts a
shipped soup by name ('default'), a soup manifest, a folder of members, or one member; the last two become a
uniform soup with the members' own thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from copick_soup.errors import SoupError
from copick_soup.objects import ParticleClass

SOUP_FORMAT = "copick-soup-soup/1"
MEMBER_FORMAT = "copick-soup-member/1"
SHIPPED = Path(__file__).resolve().parent.parent / "soups"


def shipped_soups() -> list[str]:
    return sorted(p.parent.name for p in SHIPPED.glob("*/soup.json"))


def resolve_soup_path(name_or_path) -> Path:
    """A shipped soup's name ('default') or a path -> an existing path."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SHIPPED / str(name_or_path) / "soup.json"
    if shipped.exists():
        return shipped
    known = ", ".join(shipped_soups()) or "none installed"
    raise SoupError(f"{name_or_path}: no such soup or member (shipped soups: {known})")


def _format(path: Path):
    try:
        return json.loads(Path(path).read_text()).get("format")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def read_soup(name_or_path) -> dict:
    """A soup manifest as a dict, whatever form the soup was given in; member paths are made absolute."""
    path = resolve_soup_path(name_or_path)
    if path.is_dir():
        if (path / "soup.json").exists():
            return read_soup(path / "soup.json")
        members = [p for p in sorted(path.glob("*.json")) if _format(p) == MEMBER_FORMAT]
        if not members:
            raise SoupError(f"{path}: no members (no *.json member manifests) in this folder")
        return uniform_soup(members, name=path.name)
    fmt = _format(path)
    if fmt == MEMBER_FORMAT:
        return uniform_soup([path], name=path.stem)
    if fmt != SOUP_FORMAT:
        raise SoupError(f"{path}: neither a soup nor a member manifest")
    soup = json.loads(path.read_text())
    check_soup_manifest(soup, path)
    soup.setdefault("name", path.parent.name if path.name == "soup.json" else path.stem)
    for m in soup["members"]:
        m["path"] = str((path.parent / m["path"]).resolve())
    soup["path"] = str(path)
    return soup


def check_soup_manifest(soup: dict, path: Path) -> None:
    """A hand-edited or truncated soup.json fails here, in one line, rather than deep inside loading."""
    members = soup.get("members")
    if not isinstance(members, list) or not members:
        raise SoupError(f"{path}: a soup manifest needs a non-empty 'members' list")
    for i, m in enumerate(members):
        weight = m.get("weight") if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(m.get("path"), str):
            raise SoupError(f"{path}: member {i + 1} needs a 'path' to its member manifest")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise SoupError(f"{path}: member {i + 1} ({m['path']}) needs a 'weight' >= 0, got {weight!r}")
    if not isinstance(soup.get("thresholds"), dict):
        raise SoupError(f"{path}: a soup manifest needs 'thresholds', a peak threshold per class")


def uniform_soup(members: list[Path], name: str) -> dict:
    """Equal weights; each class's threshold is the mean of the members' validation thresholds."""
    manifests = [json.loads(Path(p).read_text()) for p in members]
    classes = manifests[0]["classes"]
    per_member = [member_thresholds(m, classes) for m in manifests]
    return dict(format=SOUP_FORMAT, name=name, classes=classes, voxel_size=manifests[0]["voxel_size"],
                members=[dict(path=str(Path(p).resolve()), weight=1.0) for p in members],
                thresholds={c["name"]: sum(t[c["name"]] for t in per_member) / len(per_member) for c in classes},
                nms_scale=0.5)


def member_thresholds(manifest: dict, classes: list[dict]) -> dict:
    """A member's validation thresholds by class: one number for all (older members) or one per class."""
    threshold = manifest.get("peaks", {}).get("threshold", 0.25)
    if isinstance(threshold, dict):
        return {c["name"]: float(threshold.get(c["name"], 0.25)) for c in classes}
    return {c["name"]: float(threshold) for c in classes}


def member_paths(name_or_path) -> list[Path]:
    """Manifest paths of the members behind a soup name, soup manifest, member folder or member manifest."""
    return [Path(m["path"]) for m in read_soup(name_or_path)["members"]]


def write_soup(path, members: list[tuple[Path, float]], classes, voxel_size: float, thresholds: dict,
               nms_scale: float = 0.5, **extra) -> Path:
    """Write a soup manifest; member paths are stored relative to it so the folder can move."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = [dict(path=str(Path(p).resolve().relative_to(path.parent.resolve())) if _inside(p, path.parent)
                else str(Path(p).resolve()), weight=float(w)) for p, w in members]
    soup = dict(format=SOUP_FORMAT, name=extra.pop("name", path.parent.name), members=rel,
                classes=[c.as_dict() for c in classes],
                voxel_size=voxel_size, thresholds=thresholds, nms_scale=nms_scale, **extra)
    path.write_text(json.dumps(soup, indent=2))
    return path


def _inside(p, folder) -> bool:
    try:
        Path(p).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


@dataclass
class LoadedSoup:
    """Members loaded once (a Ray actor holds one of these), with what picking needs."""

    name: str
    members: list  # [(model, manifest, weight)]
    classes: list[ParticleClass]
    voxel_size: float
    thresholds: dict
    nms_scale: float = 0.5
    manifest: dict = field(default_factory=dict)
    overlap: float = 0.0  # cross-class suppression (peaks/overlap.py); 0: off

    @property
    def tomo_types(self) -> list[str]:
        return sorted({m["tomo_type"] for _, m, _ in self.members})


def load_members(paths, weights, device: str = "cpu") -> tuple[list, list[ParticleClass], float]:
    """([(model, manifest, weight)], classes, voxel size) of members that agree on classes and voxel size."""
    from copick_soup.model.checkpoint import load_member

    members = [(*load_member(p, device), float(w)) for p, w in zip(paths, weights)]
    check_compatible([manifest for _, manifest, _ in members])
    first = members[0][1]
    return members, [ParticleClass.from_dict(c) for c in first["classes"]], float(first["voxel_size"])


def load_soup(name_or_path, device: str = "cpu") -> LoadedSoup:
    """Load every member of a soup onto `device`; members must agree on classes and voxel size."""
    soup = read_soup(name_or_path)
    members, classes, voxel_size = load_members([m["path"] for m in soup["members"]],
                                                [m["weight"] for m in soup["members"]], device)
    missing = [c.name for c in classes if c.name not in soup["thresholds"]]
    if missing:
        raise SoupError(f"{soup.get('path', soup['name'])}: no threshold for class(es) {', '.join(missing)}")
    return LoadedSoup(soup["name"], members, classes, voxel_size, soup["thresholds"],
                      float(soup.get("nms_scale", 0.5)), soup, float(soup.get("overlap", 0.0)))


def check_compatible(manifests: list[dict]) -> None:
    """Members of one soup must predict the same classes at the same voxel size."""
    first = manifests[0]
    names = [c["name"] for c in first["classes"]]
    for m in manifests[1:]:
        if [c["name"] for c in m["classes"]] != names:
            raise SoupError(f"members {Path(first['path']).name} and {Path(m['path']).name} were trained for "
                            f"different classes")
        if abs(float(m["voxel_size"]) - float(first["voxel_size"])) > 1e-3:
            raise SoupError(f"members {Path(first['path']).name} and {Path(m['path']).name} have different voxel "
                            f"sizes ({first['voxel_size']} and {m['voxel_size']} Å)")
