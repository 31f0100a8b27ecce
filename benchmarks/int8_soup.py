"""A soup with its members swapped for their INT8 copies (`copick-soup quantise`), weights and thresholds kept: how
issue 48's full-tomogram table measures the default soup in INT8 (`make default-int8`, build/default-int8).

A member is swapped where one of the --int8 folders holds `<its name>-int8.json`; the others stay as they are. The
thresholds stay valid because each INT8 copy was fine-tuned to give its float member's heatmaps.

    python benchmarks/int8_soup.py --soup default --int8 build/default-int8 copick_soup/soups/fast-int8 \
        --out build/default-int8/soup.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from copick_soup.ensemble import Ensemble
from copick_soup.model.manifest import SoupManifest, SoupMember


def int8_soup(soup, int8_folders: list[Path], out: Path) -> list[str]:
    """Write the swapped soup.json to `out`; return the names of the members that were swapped."""
    manifest = SoupManifest.read(soup)
    members, swapped = [], []
    for member in manifest.members:
        copies = [folder / f"{member.path.stem}-int8.json" for folder in int8_folders]
        found = next((copy.resolve() for copy in copies if copy.exists()), None)
        if found is not None:
            swapped.append(found.stem)
        members.append(SoupMember(found or member.path, member.weight))
    replace(manifest, name=f"{manifest.name}-int8", members=members).write(out)
    return swapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soup", default="default", help="a shipped soup's name or a soup.json")
    parser.add_argument("--int8", nargs="+", type=Path, required=True, help="folders holding <member>-int8.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    swapped = int8_soup(args.soup, args.int8, args.out)
    Ensemble.load(str(args.out))  # it must load as `pick` loads it
    print(f"{args.out}: {', '.join(swapped) or 'no member'} in INT8")


if __name__ == "__main__":
    main()
