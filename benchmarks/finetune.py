"""A lab's path: the default soup on held-out experimental-profile runs before and after fine-tuning its members
on three annotated runs (and rebuilding the soup's thresholds on one more), with the time it took. A middle row,
the default members with weights and thresholds searched on that one run, separates what the search does from what
the fine-tuning does.

    python benchmarks/finetune.py [--steps 100] [--out /tmp/copick-soup-bench-finetune]

Prints a table and writes benchmarks/results/finetune.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from table import markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.evaluate import score_project
from copick_soup.model.manifest import member_paths
from copick_soup.pick import PickOptions, pick_runs
from copick_soup.simulate import simulate_project
from copick_soup.soup.build import build_soup
from copick_soup.train.recipe import finetune_members

RESULTS = Path(__file__).parent / "results" / "finetune.md"
TRAIN, VAL, HELD_OUT = ["exp_000", "exp_001", "exp_002"], ["exp_003"], ["exp_004", "exp_005"]


def score_soup(config, soup, session: str):
    root = open_project(config)
    opts = PickOptions(user_id="bench", session_id=session, overwrite=True)
    pick_runs(root, Ensemble.load(soup), HELD_OUT, InferenceSettings(), opts, echo=lambda m: None)
    return score_project(root, "curation", "bench", "0", session, run_names=HELD_OUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default="/tmp/copick-soup-bench-finetune")
    args = parser.parse_args()
    out = Path(args.out)
    config = out / "lab" / "copick.json"
    if not config.exists():
        simulate_project(config.parent, runs=6, shape=(96, 192, 192), profile="experimental", seed=31,
                         crowding=2.0)

    shutil.rmtree(out / "members", ignore_errors=True)  # the members of an earlier run of this benchmark
    defaults = member_paths("default")
    before = score_soup(config, "default", "before")
    searched = build_soup(config, [str(p) for p in defaults], VAL, out / "soup-searched", echo=lambda m: None)
    searched = score_soup(config, searched, "searched")
    wall, cpu = time.perf_counter(), time.process_time()
    members = finetune_members(config, defaults, out / "members", TRAIN, VAL,
                               overrides=dict(steps=args.steps), echo=lambda m: None)
    soup = build_soup(config, [str(p) for p in members], VAL, out / "soup", echo=lambda m: None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = score_soup(config, soup, "after")

    names = [c.name for c in before.classes]
    rows = [f"| {label} | {s.weighted:.3f} | " + " | ".join(f"{c.fbeta():.3f}" for c in s.classes) + " |"
            for label, s in (("default soup", before),
                             (f"default members, weights and thresholds searched on {len(VAL)} lab run", searched),
                             (f"fine-tuned ({args.steps} steps per member), searched likewise", after))]
    publish(RESULTS, [
        f"Fine-tuning benchmark: default soup, {len(members)} member(s) fine-tuned on {len(TRAIN)} annotated "
        f"experimental-profile runs, thresholds searched on {len(VAL)}, scored on {len(HELD_OUT)} held-out runs; "
        f"{cpu()}, {time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["soup", "held-out F4", *names], rows),
        "",
        f"Fine-tuning and soup search took {wall:.0f} s wall, {cpu:.0f} s CPU.",
    ])


if __name__ == "__main__":
    main()
