"""Which of a run's tomograms a member reads: matched by kind, not only by name.

A member declares the kind of tomogram it was trained on by its type name: `wbp` (raw weighted back-projection),
`ctfdeconvolved` (WBP, CTF-deconvolved) or `denoised`. Runs name their tomograms as their source did: the CZII
Kaggle layout uses those three names; copick's portal backend names portal tomograms
`{reconstruction_method}-{processing}[-{software}][-ctfdeconv]` (`wbp-raw`, `wbp-filtered-ctfdeconv`,
`wbp-denoised-denoiset-ctfdeconv`), and a portal project synced to disk keeps only those names, so the name alone
decides. Where several of a run's tomograms are of the member's kind, the choice is deterministic (the member's
own name first, then raw before filtered, then by name) and `pick` says which it took. `--tomo-map KIND=NAME`
overrides the match.
"""

from __future__ import annotations

from copick_soup.data.project import parse_pairs
from copick_soup.errors import SoupError

KINDS = ("wbp", "ctfdeconvolved", "denoised")
PROCESSING = ("raw", "filtered", "denoised")  # the portal's processing values


def kind_of(name: str) -> str | None:
    """The kind of a tomogram from its name (None: not one of KINDS, e.g. another reconstruction method)."""
    if name in KINDS:
        return name
    parts = name.split("-")
    if len(parts) < 2 or parts[0] != "wbp" or parts[1] not in PROCESSING:
        return None
    if parts[1] == "denoised":
        return "denoised"
    return "ctfdeconvolved" if parts[-1] == "ctfdeconv" else "wbp"


def preference(wanted: str, name: str) -> tuple:
    """Sort key among a run's tomograms of one kind: the member's own name, then raw before filtered, then name."""
    return name != wanted, "-filtered" in name, name


def match_tomogram(wanted: str, names, tomo_map: dict | None = None) -> tuple[str | None, list[str]]:
    """(the tomogram a member of type `wanted` reads among `names`, every other candidate of its kind).

    `tomo_map` ({kind or member type: tomogram name}) overrides; a mapped name the run lacks is no match."""
    names = sorted(set(names))
    if tomo_map and wanted in tomo_map:
        return (tomo_map[wanted] if tomo_map[wanted] in names else None), []
    kind = kind_of(wanted) or wanted
    candidates = sorted((n for n in names if n == wanted or kind_of(n) == kind), key=lambda n: preference(wanted, n))
    return (candidates[0] if candidates else None), candidates[1:]


def parse_tomo_map(pairs) -> dict:
    """['denoised=wbp-denoised-denoiset-ctfdeconv', ...] (repeated or comma-joined) -> {kind: tomogram name}."""
    return parse_pairs(pairs, "--tomo-map", "KIND=TOMOGRAM")


def check_tomo_map(tomo_map: dict, member_types, run_names_by_run: dict) -> None:
    """Refuse a --tomo-map naming a member type no member has, or a tomogram no run has; the error lists what
    exists."""
    unknown = sorted(set(tomo_map) - set(member_types))
    if unknown:
        raise SoupError(f"--tomo-map: no member reads '{unknown[0]}'; the soup's members read "
                        f"{', '.join(sorted(set(member_types)))}")
    everywhere = {n for names in run_names_by_run.values() for n in names}
    missing = sorted(set(tomo_map.values()) - everywhere)
    if missing:
        raise SoupError(f"--tomo-map: no run has a tomogram '{missing[0]}'; the runs have "
                        f"{', '.join(sorted(everywhere)) or 'none'}")


def reading_lines(manifests, names, tomo_map: dict | None = None, forced: str | None = None) -> list[str]:
    """One line per member (MemberManifest): which of a run's tomograms (`names`) it reads."""
    lines = []
    for m in manifests:
        chosen, others = (forced, []) if forced else match_tomogram(m.tomo_type, names, tomo_map)
        also = f" (also of its kind: {', '.join(others)})" if others else ""
        lines.append(f"  {m.name}: reads '{chosen}'{also}" if chosen and chosen in names else
                     f"  {m.name}: no {m.tomo_type} tomogram here; left out")
    return lines
