"""Does the soup beat its members? Validation and held-out F4 of the searched soup against each single member.

Weights and thresholds (the soup's, and each member's own best thresholds) are searched on validation runs of
both phantom engines (`mixed`: runs alternate between them); the held-out runs of each engine are simulated from
other seeds and used for nothing but this table. "Both" pools the two engines' held-out runs, as the metric pools
runs.

    python benchmarks/soup.py [--soup default] [--val-runs 8] [--held-out-runs 8]

Prints a table and writes benchmarks/results/soup.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import score_project
from copick_soup.metric import Score
from copick_soup.model.manifest import SoupManifest, SoupMember, member_paths
from copick_soup.pick import PickOptions, pick_runs
from copick_soup.simulate import MIXED, MIXED_ENGINES, simulate_project
from copick_soup.soup.build import build_soup

ENGINES = MIXED_ENGINES  # blobs and tilt, the default soup's; the held-out `sart` engine is not in this table

RESULTS = Path(__file__).parent / "results" / "soup.md"
SHAPE = (96, 192, 192)


def held_out_scores(configs: dict, soup_path, session: str) -> dict:
    """{engine: Score} on each engine's held-out runs, and "both": the runs of every engine pooled."""
    scores = {}
    for engine, config in configs.items():
        root = open_project(config)
        pick_runs(root, Ensemble.load(soup_path), None, InferenceSettings(),
                  PickOptions(user_id="bench", session_id=session, overwrite=True), echo=lambda m: None)
        scores[engine] = score_project(root, "curation", "bench", "0", session)
    scores["both"] = Score.pooled(list(scores.values()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soup", default="default", help="where the members come from")
    parser.add_argument("--val-runs", type=int, default=8)
    parser.add_argument("--held-out-runs", type=int, default=8, help="per engine")
    parser.add_argument("--step", type=float, default=0.25)
    parser.add_argument("--out", default="/tmp/copick-soup-bench-soup")
    args = parser.parse_args()
    out = Path(args.out)
    val_config = out / f"val-{MIXED}-{args.val_runs}" / "copick.json"
    if not val_config.exists():
        simulate_project(val_config.parent, runs=args.val_runs, shape=SHAPE, seed=5151, crowding=2.0, engine=MIXED)
    test_configs = {}
    for i, engine in enumerate(ENGINES):
        test_configs[engine] = out / f"held-out-{engine}-{args.held_out_runs}" / "copick.json"
        if not test_configs[engine].exists():
            simulate_project(test_configs[engine].parent, runs=args.held_out_runs, shape=SHAPE, seed=6161 + i,
                             crowding=2.0, engine=engine)

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
        rows.append((name, single["score"], held_out_scores(test_configs, single_soup, name)))
    held = held_out_scores(test_configs, soup_path, "soup")
    weights = ", ".join(f"{m.path.stem} {m.weight:.2f}" for m in soup.members)
    columns = [*ENGINES, "both"]

    def line(name, validation, scores):
        return f"| {name} | {validation:.3f} | " + " | ".join(f"{scores[c].weighted:.3f}" for c in columns) + " |"

    lines = [line(name, v, h) for name, v, h in rows]
    lines.append(line(f"**soup** ({weights})", soup.validation["score"], held))
    verdicts = []
    for c in columns:
        best_name, _, best = max(rows, key=lambda r: r[2][c].weighted)
        wins = held[c].weighted > best[c].weighted
        verdicts.append(f"{c}: {held[c].weighted:.3f} vs {best[c].weighted:.3f} ({best_name}; "
                        f"{'soup wins' if wins else 'soup does NOT win'})")
    publish(RESULTS, [
        f"Soup benchmark: members of '{args.soup}', weights (step {args.step}) and thresholds searched on "
        f"{args.val_runs} validation runs of both engines, scored on {args.held_out_runs} held-out "
        f"experimental-profile runs per engine ({'x'.join(map(str, SHAPE))}); {cpu()}, "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["model", "validation F4", *(f"held-out F4: {c}" if i == 0 else c for i, c in enumerate(columns))],
                  lines),
        "",
        "Soup vs best single member on held-out runs: " + "; ".join(verdicts) + ".",
        "",
        "Soup per class on held-out runs of both engines:",
        "",
        held["both"].table(),
    ])


if __name__ == "__main__":
    main()
