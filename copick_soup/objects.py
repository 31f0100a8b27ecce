"""Particle classes: read from a copick project, with the six CZII targets as the default template.

Nothing downstream hard-codes a class list. Every stage asks `classes_from_root(root)`, so a lab that
writes its own pickable objects into its copick config trains, soups and picks its own targets.

Per-class extras live in each pickable object's `metadata`:
- `score_weight`: the weight of the class in the CZII F-beta average (default 1).
- `simulation`: hints for the phantom simulator (`shape`: "shell" or "lobes", `subunits`, `per_tomogram`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

VOXEL_SIZE = 10.012  # Å, the CZII phantom tomograms
FULL_SHAPE = (184, 630, 630)  # (Z, Y, X) of a CZII tomogram
TOMO_TYPES = ("wbp", "denoised", "ctfdeconvolved")

# The CZII phantom targets, as the competition's copick config lists them; `identifier` is the annotation
# object id on the CZ cryoET Data Portal, which copick's portal backend matches picks by. `per_tomogram` is the mean
# count in one 184x630x630 experimental tomogram (rounded from the 10440 ground truth).
CZII_OBJECTS = [
    dict(name="apo-ferritin", label=1, radius=60.0, pdb_id="4V1W", identifier="GO:0070288",
         color=(0, 117, 220, 128), map_threshold=0.0418,
         metadata=dict(score_weight=1, simulation=dict(shape="shell", subunits=24, per_tomogram=46))),
    dict(name="beta-amylase", label=2, radius=65.0, pdb_id="1FA2", identifier="UniProtKB:P10537",
         color=(153, 63, 0, 128), map_threshold=0.035,
         metadata=dict(score_weight=0, simulation=dict(shape="lobes", subunits=4, per_tomogram=12))),
    dict(name="beta-galactosidase", label=3, radius=90.0, pdb_id="6X1Q", identifier="UniProtKB:P00722",
         color=(76, 0, 92, 128), map_threshold=0.0578,
         metadata=dict(score_weight=2, simulation=dict(shape="lobes", subunits=4, per_tomogram=12))),
    dict(name="ribosome", label=4, radius=150.0, pdb_id="6EK0", identifier="GO:0022626",
         color=(0, 92, 49, 128), map_threshold=0.0374,
         metadata=dict(score_weight=1, simulation=dict(shape="lobes", subunits=2, per_tomogram=32))),
    dict(name="thyroglobulin", label=5, radius=130.0, pdb_id="6SCJ", identifier="UniProtKB:P01267",
         color=(43, 206, 72, 128), map_threshold=0.0278,
         metadata=dict(score_weight=2, simulation=dict(shape="lobes", subunits=6, per_tomogram=30))),
    dict(name="virus-like-particle", label=6, radius=135.0, pdb_id="6N4V", identifier="GO:0170047",
         color=(255, 204, 153, 128), map_threshold=0.201,
         metadata=dict(score_weight=1, simulation=dict(shape="shell", subunits=60, per_tomogram=12))),
]


@dataclass(frozen=True)
class ParticleClass:
    """One pickable particle class, as the rest of the pipeline sees it."""

    name: str
    label: int
    radius: float  # Å
    score_weight: float = 1.0
    simulation: dict = field(default_factory=dict, compare=False, hash=False)
    identifier: str | None = field(default=None, compare=False)  # GO / UniProt id, as portal-made configs carry

    def as_dict(self) -> dict:
        """The fields members and soups record in their manifests."""
        return dict(name=self.name, label=self.label, radius=self.radius, score_weight=self.score_weight,
                    **({"identifier": self.identifier} if self.identifier else {}))

    @classmethod
    def from_dict(cls, d: dict) -> ParticleClass:
        return cls(d["name"], int(d["label"]), float(d["radius"]), float(d.get("score_weight", 1.0)),
                   identifier=d.get("identifier"))


def czii_pickable_objects() -> list[dict]:
    """The six CZII targets as copick `pickable_objects` entries (plain dicts, ready for a config file)."""
    objects = []
    for obj in CZII_OBJECTS:
        entry = dict(name=obj["name"], is_particle=True, label=obj["label"], color=list(obj["color"]),
                     pdb_id=obj["pdb_id"], identifier=obj["identifier"], radius=obj["radius"],
                     map_threshold=obj["map_threshold"], metadata=obj["metadata"])
        objects.append(entry)
    return objects


def classes_from_objects(objects) -> list[ParticleClass]:
    """Particle classes from copick pickable objects (models or dicts), sorted by label.

    Objects that are not particles (segmentation-only targets) or that have no radius are skipped:
    a point picker cannot score them.
    """
    classes = []
    for obj in objects:
        get = obj.get if isinstance(obj, dict) else lambda key, o=obj: getattr(o, key, None)
        if not get("is_particle") or not get("radius"):
            continue
        meta = get("metadata") or {}
        classes.append(ParticleClass(name=get("name"), label=int(get("label")), radius=float(get("radius")),
                                     score_weight=float(meta.get("score_weight", 1.0)),
                                     simulation=dict(meta.get("simulation", {})), identifier=get("identifier")))
    return sorted(classes, key=lambda c: c.label)


def classes_from_root(root) -> list[ParticleClass]:
    """Particle classes of an open copick project."""
    return classes_from_objects(root.config.pickable_objects)
