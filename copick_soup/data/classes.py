"""Which of a project's pickable objects each soup class writes to (and reads ground truth from).

A soup names its classes as the project it was trained on did (`apo-ferritin`, `ribosome`); configs the portal
makes name the same targets `ferritin-complex`, `cytosolic-ribosome`. Each soup class is matched to a particle
object of the project by an explicit `--class-map SOUP=PROJECT`, else by name, else by `identifier` (the GO or
UniProt id portal-made configs carry, which a soup records for its classes). The mapping is checked and printed
before any run starts; a class with no match is an error naming the candidates.
"""

from __future__ import annotations

from copick_soup.data.project import parse_pairs
from copick_soup.errors import SoupError


def parse_class_map(pairs) -> dict:
    """['apo-ferritin=ferritin-complex', ...] (repeated or comma-joined) -> {soup class: project object}."""
    return parse_pairs(pairs, "--class-map", "SOUP_CLASS=PROJECT_OBJECT")


def map_classes(classes, objects, class_map: dict | None = None) -> dict:
    """{soup class name: project object name} for `classes` (ParticleClass) against the project's particle
    objects (`objects`: ParticleClass too, from `classes_from_root`)."""
    class_map = dict(class_map or {})
    names = [o.name for o in objects]
    unknown = sorted(set(class_map) - {c.name for c in classes})
    if unknown:
        raise SoupError(f"--class-map: the soup has no class '{unknown[0]}'; its classes are "
                        f"{', '.join(c.name for c in classes)}")
    absent = sorted(set(class_map.values()) - set(names))
    if absent:
        raise SoupError(f"--class-map: the project has no particle object '{absent[0]}'; it has {', '.join(names)}")
    by_identifier = {o.identifier: o.name for o in objects if o.identifier}
    mapping = {}
    for c in classes:
        target = class_map.get(c.name) or (c.name if c.name in names else by_identifier.get(c.identifier or ""))
        if target is None:
            raise SoupError(f"soup class '{c.name}'{f' ({c.identifier})' if c.identifier else ''} matches no "
                            f"particle object of the project by name or identifier; candidates: {', '.join(names)} "
                            f"(map it with --class-map {c.name}=OBJECT)")
        mapping[c.name] = target
    taken = [t for t in mapping.values() if list(mapping.values()).count(t) > 1]
    if taken:
        raise SoupError(f"soup classes {', '.join(k for k, v in mapping.items() if v == taken[0])} all map to "
                        f"'{taken[0]}'; give each its own object with --class-map")
    return mapping


def mapping_lines(classes, mapping: dict, class_map: dict | None = None) -> list[str]:
    """How each soup class was matched, for the screen (one line if every class kept its name)."""
    if all(k == v for k, v in mapping.items()):
        return [f"classes: all {len(mapping)} matched by name"]
    how = {c.name: ("--class-map" if c.name in (class_map or {}) else "name" if mapping[c.name] == c.name
                    else f"identifier {c.identifier}") for c in classes}
    return ["classes:"] + [f"  {name} -> {target} (by {how[name]})" for name, target in mapping.items()]
