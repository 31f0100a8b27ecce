"""Does the soup beat its members? Validation and held-out F4 of the searched soup against each single member.

Weights and thresholds (the soup's, and each member's own best thresholds) are searched on validation runs
only; the held-out runs are simulated from another seed and used for nothing but this table.

    python benchmarks/soup.py [--soup default] [--val-runs 8] [--held-out-runs 16]

Prints a table and writes benchmarks/results/soup.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import score_project
from copick_soup.model.manifest import SoupManifest, SoupMember, member_paths
from copick_soup.pick import PickOptions, pick_runs
from copick_soup.simulate import simulate_project
from copick_soup.soup.build import build_soup

RESULTS = Path(__file__).parent / "results" / "soup.md"
SHAPE = (96, 192, 192)


def held_out_score(config, soup_path, session: str):
    root = open_project(config)
    pick_runs(root, Ensemble.load(soup_path), None, InferenceSettings(),
              PickOptions(user_id="bench", session_id=session, overwrite=True), echo=lambda m: None)
    return score_project(root, "curation", "bench", "0", session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soup", default="default", help="where the members come from")
    parser.add_argument("--val-runs", type=int, default=8)
    parser.add_argument("--held-out-runs", type=int, default=16)
    parser.add_argument("--step", type=float, default=0.25)
    parser.add_argument("--out", default="/tmp/copick-soup-bench-soup")
    args = parser.parse_args()
    out = Path(args.out)
    val_config = out / f"val-{args.val_runs}" / "copick.json"
    test_config = out / f"held-out-{args.held_out_runs}" / "copick.json"
    if not val_config.exists():
        simulate_project(val_config.parent, runs=args.val_runs, shape=SHAPE, seed=5151, crowding=2.0)
    if not test_config.exists():
        simulate_project(test_config.parent, runs=args.held_out_runs, shape=SHAPE, seed=6161, crowding=2.0)

    paths = member_paths(args.soup)
    val_runs = [r.name for r in open_project(val_config).runs]
    soup_path = build_soup(val_config, [str(p) for p in paths], val_runs, out / "soup", step=args.step,
                           echo=lambda m: None)
    soup = SoupManifest.read(soup_path)
    rows = []
    for name, single in soup.validation["members"].items():
        path = next(p for p in paths if p.stem == name)
        single_soup = SoupManifest(name, [SoupMember(path, 1.0)], soup.classes, soup.voxel_size,
                                   single["thresholds"]).write(out / "singles" / name / "soup.json")
        held = held_out_score(test_config, single_soup, name)
        rows.append((name, single["score"], held.weighted))
    held = held_out_score(test_config, soup_path, "soup")
    weights = ", ".join(f"{m.path.stem} {m.weight:.2f}" for m in soup.members)
    lines = [f"| {name} | {v:.3f} | {h:.3f} |" for name, v, h in rows]
    lines.append(f"| **soup** ({weights}) | {soup.validation['score']:.3f} | {held.weighted:.3f} |")
    best_single = max(h for _, _, h in rows)
    table = "\n".join([
        f"Soup benchmark: members of '{args.soup}', weights (step {args.step}) and thresholds searched on "
        f"{args.val_runs} validation runs, scored on {args.held_out_runs} held-out experimental-profile runs "
        f"({'x'.join(map(str, SHAPE))}); {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
        "",
        "| model | validation F4 | held-out F4 |",
        "|---|---|---|",
        *lines,
        "",
        f"Soup vs best single member on held-out runs: {held.weighted:.3f} vs {best_single:.3f} "
        f"({'soup wins' if held.weighted > best_single else 'soup does NOT win'}).",
        "",
        "Soup per class on held-out runs:",
        "",
        held.table(),
    ])
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table + "\n")


if __name__ == "__main__":
    main()
