"""Member and soup manifests: typed in memory, JSON on disk.

A member is `NAME.safetensors` plus `NAME.json` (format copick-soup-member/1): everything needed to rebuild and
use the model (variant and U-Net config, classes, voxel size, tomogram type, normalisation, peak thresholds)
and where it came from (training provenance). A soup is `soup.json` (format copick-soup-soup/1): member
manifests (paths relative to it) with their ensemble weights, per-class peak thresholds, the classes and the
voxel size. `pick` accepts a shipped soup by name ('default'), a soup manifest, a folder of members, or one
member; the last two become a uniform soup with the members' own thresholds.

Dicts stop here: the rest of the package sees `MemberManifest` and `SoupManifest`. Keys this version does not
know are kept in `extra` and written back, so a manifest from a newer version survives a round trip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from copick_soup.errors import SoupError
from copick_soup.objects import ParticleClass

MEMBER_FORMAT = "copick-soup-member/1"
SOUP_FORMAT = "copick-soup-soup/1"
SHIPPED = Path(__file__).resolve().parent.parent / "soups"
DEFAULT_THRESHOLD = 0.25  # a member's peak threshold before validation has chosen one


def manifest_path(path) -> Path:
    """Accept the manifest, the weights or the common stem; return the manifest's path."""
    path = Path(path)
    if path.suffix == ".json":
        return path
    if path.suffix == ".safetensors":
        return path.with_suffix(".json")
    return path.with_name(path.name + ".json")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise SoupError(f"{path}: no such {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoupError(f"{path}: corrupt {what} ({err})") from err
    if not isinstance(data, dict):
        raise SoupError(f"{path}: corrupt {what} (not a JSON object)")
    return data


def _format(path: Path):
    try:
        return json.loads(Path(path).read_text()).get("format")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def _split(data: dict, known) -> tuple[dict, dict]:
    return {k: v for k, v in data.items() if k in known}, {k: v for k, v in data.items() if k not in known}


@dataclass
class MemberManifest:
    name: str
    variant: str  # a registered U-Net variant, e.g. unet3d_tiny
    unet: dict  # its config (channels, in_channels, n_classes): the model is rebuilt from this alone
    classes: list[ParticleClass]
    voxel_size: float  # Å
    tomo_type: str  # the tomogram type it reads
    threshold: float | dict = DEFAULT_THRESHOLD  # peak threshold: one number (older members) or one per class
    nms_scale: float = 0.5
    normalisation: dict = field(default_factory=lambda: dict(method="zscore",
                                                             region="central eighth of the tomogram"))
    target: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # provenance, the training config, validation scores
    weights: str = ""  # the safetensors file's name, beside the manifest
    sha256: str = ""
    path: Path | None = None  # where it was read from (not stored)
    extra: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def normalisation_method(self) -> str:
        """How inputs are normalised for it (data/tomogram.py): members made before there was a choice z-score."""
        return self.normalisation.get("method", "zscore")

    @property
    def int8(self) -> dict:
        """The INT8 record of a quantisation-aware member (model/int8.py: NNCF's placement, the teacher), else {}."""
        return self.extra.get("int8") or {}

    @property
    def weights_path(self) -> Path:
        return manifest_path(self.path).with_name(self.weights)

    @property
    def label(self) -> str:
        """The file name, for messages."""
        return self.path.name if self.path else self.name

    def thresholds(self) -> dict[str, float]:
        """The member's peak threshold per class."""
        if isinstance(self.threshold, dict):
            return {c.name: float(self.threshold.get(c.name, DEFAULT_THRESHOLD)) for c in self.classes}
        return {c.name: float(self.threshold) for c in self.classes}

    def training_config(self) -> dict:
        """The training settings it was made with (a weight soup's: its first ingredient's)."""
        if "config" in self.training:
            return self.training["config"]
        ingredients = self.training.get("ingredient_training") or [{}]
        return ingredients[0].get("config", {})

    @property
    def patch(self) -> int:
        """The side of the patches it was trained on (0 if unknown)."""
        return int(self.training_config().get("patch") or 0)

    def to_json(self) -> dict:
        return dict(name=self.name, architecture=dict(name=self.variant, config=self.unet),
                    classes=[c.as_dict() for c in self.classes], voxel_size=self.voxel_size,
                    tomo_type=self.tomo_type, normalisation=self.normalisation, target=self.target,
                    peaks=dict(threshold=self.threshold, nms_scale=self.nms_scale), training=self.training,
                    **self.extra, format=MEMBER_FORMAT, weights=self.weights, sha256=self.sha256)

    @classmethod
    def from_json(cls, data: dict, path: Path | None = None) -> MemberManifest:
        where = path or "member manifest"
        if data.get("format") != MEMBER_FORMAT:
            raise SoupError(f"{where}: not a copick-soup member (format {data.get('format')!r})")
        known, extra = _split(data, {"name", "architecture", "classes", "voxel_size", "tomo_type", "normalisation",
                                     "target", "peaks", "training", "format", "weights", "sha256", "path"})
        try:
            arch, peaks = known["architecture"], known.get("peaks") or {}
            return cls(name=str(known["name"]), variant=str(arch["name"]), unet=dict(arch.get("config") or {}),
                       classes=[ParticleClass.from_dict(c) for c in known["classes"]],
                       voxel_size=float(known["voxel_size"]), tomo_type=str(known["tomo_type"]),
                       threshold=peaks.get("threshold", DEFAULT_THRESHOLD),
                       nms_scale=float(peaks.get("nms_scale", 0.5)),
                       normalisation=known.get("normalisation") or {}, target=known.get("target") or {},
                       training=known.get("training") or {}, weights=str(known.get("weights", "")),
                       sha256=str(known.get("sha256", "")), path=path, extra=extra)
        except (KeyError, TypeError, ValueError) as err:
            raise SoupError(f"{where}: corrupt member manifest (missing or bad {err})") from err

    @classmethod
    def read(cls, path) -> MemberManifest:
        json_path = manifest_path(path)
        return cls.from_json(_read_json(json_path, "member manifest"), json_path)

    def write(self, path) -> Path:
        json_path = manifest_path(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_json(), indent=2))
        self.path = json_path
        return json_path


def check_compatible(members: list[MemberManifest]) -> None:
    """Members of one soup must predict the same classes at the same voxel size."""
    first = members[0]
    for m in members[1:]:
        if m.class_names != first.class_names:
            raise SoupError(f"members {first.label} and {m.label} were trained for different classes")
        if abs(m.voxel_size - first.voxel_size) > 1e-3:
            raise SoupError(f"members {first.label} and {m.label} have different voxel sizes ({first.voxel_size:g} "
                            f"and {m.voxel_size:g} Å)")


@dataclass
class SoupMember:
    path: Path  # absolute once read
    weight: float


@dataclass
class SoupManifest:
    name: str
    members: list[SoupMember]
    classes: list[ParticleClass]
    voxel_size: float
    thresholds: dict[str, float]  # per-class peak threshold
    nms_scale: float = 0.5
    overlap: float = 0.0  # cross-class suppression distance (ensemble/overlap.py); 0: off
    validation: dict = field(default_factory=dict)  # what the search saw: runs, scores, settings
    path: Path | None = None  # where it was read from (not stored)
    extra: dict = field(default_factory=dict)

    @property
    def member_paths(self) -> list[Path]:
        return [m.path for m in self.members]

    @property
    def where(self) -> str:
        return str(self.path or self.name)

    def to_json(self, folder: Path | None = None) -> dict:
        """The manifest's JSON; member paths inside `folder` (the manifest's) are stored relative to it."""
        members = [dict(path=_relative(m.path, folder), weight=float(m.weight)) for m in self.members]
        return dict(format=SOUP_FORMAT, name=self.name, members=members, classes=[c.as_dict() for c in self.classes],
                    voxel_size=self.voxel_size, thresholds=self.thresholds, nms_scale=self.nms_scale,
                    overlap=self.overlap, **({"validation": self.validation} if self.validation else {}), **self.extra)

    def write(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(path.parent), indent=2))
        self.path = path
        return path

    @classmethod
    def from_json(cls, data: dict, path: Path) -> SoupManifest:
        """A soup.json's content; a hand-edited or truncated one fails here, in one line."""
        check_soup_json(data, path)
        known, extra = _split(data, {f.name for f in fields(cls)} | {"format"})
        members = [SoupMember((path.parent / m["path"]).resolve(), float(m["weight"])) for m in known["members"]]
        classes = [ParticleClass.from_dict(c) for c in known.get("classes") or []]
        voxel_size = known.get("voxel_size")
        if not classes or voxel_size is None:  # a hand-written soup may leave them to its first member
            first = MemberManifest.read(members[0].path)
            classes, voxel_size = classes or first.classes, first.voxel_size if voxel_size is None else voxel_size
        name = known.get("name") or (path.parent.name if path.name == "soup.json" else path.stem)
        return cls(name, members, classes, float(voxel_size), {k: float(v) for k, v in known["thresholds"].items()},
                   float(known.get("nms_scale", 0.5)), float(known.get("overlap", 0.0)),
                   known.get("validation") or {}, path, extra)

    @classmethod
    def read(cls, name_or_path) -> SoupManifest:
        """A soup, whatever form it was given in: a shipped soup's name, a soup.json, a folder of members (or
        holding a soup.json), or one member manifest."""
        path = resolve_soup_path(name_or_path)
        if path.is_dir():
            if (path / "soup.json").exists():
                return cls.read(path / "soup.json")
            members = [p for p in sorted(path.glob("*.json")) if _format(p) == MEMBER_FORMAT]
            if not members:
                raise SoupError(f"{path}: no members (no *.json member manifests) in this folder")
            return cls.uniform(members, name=path.name)
        fmt = _format(path)
        if fmt == MEMBER_FORMAT:
            return cls.uniform([path], name=path.stem)
        if fmt != SOUP_FORMAT:
            raise SoupError(f"{path}: neither a soup nor a member manifest")
        return cls.from_json(json.loads(path.read_text()), path)

    @classmethod
    def uniform(cls, paths, name: str) -> SoupManifest:
        """Equal weights; each class's threshold is the mean of the members' validation thresholds."""
        manifests = [MemberManifest.read(p) for p in paths]
        check_compatible(manifests)
        classes = manifests[0].classes
        per_member = [m.thresholds() for m in manifests]
        thresholds = {c.name: sum(t[c.name] for t in per_member) / len(per_member) for c in classes}
        return cls(name, [SoupMember(m.path.resolve(), 1.0) for m in manifests], classes, manifests[0].voxel_size,
                   thresholds)


def check_soup_json(data: dict, path: Path) -> None:
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise SoupError(f"{path}: a soup manifest needs a non-empty 'members' list")
    for i, m in enumerate(members):
        weight = m.get("weight") if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(m.get("path"), str):
            raise SoupError(f"{path}: member {i + 1} needs a 'path' to its member manifest")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise SoupError(f"{path}: member {i + 1} ({m['path']}) needs a 'weight' >= 0, got {weight!r}")
    if not isinstance(data.get("thresholds"), dict):
        raise SoupError(f"{path}: a soup manifest needs 'thresholds', a peak threshold per class")


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


def member_paths(name_or_path) -> list[Path]:
    """Manifest paths of the members behind a soup name, soup manifest, member folder or member manifest."""
    return SoupManifest.read(name_or_path).member_paths


def _relative(p: Path, folder: Path | None) -> str:
    p = Path(p).resolve()
    if folder is not None:
        try:
            return str(p.relative_to(Path(folder).resolve()))
        except ValueError:
            pass
    return str(p)
