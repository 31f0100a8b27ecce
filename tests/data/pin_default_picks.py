"""Write tests/data/default-soup-picks.json: the default soup's picks on two small simulated runs, which
tests/test_pinned.py checks every later version against (a restructuring must change no pick).

Run it only when a change is meant to change picks (a new default soup, a new peak rule), and say so in the
commit: `python tests/data/pin_default_picks.py`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import copick_soup  # noqa: F401  (before torch: its CPU settings)

HERE = Path(__file__).resolve().parent
PINNED = HERE / "default-soup-picks.json"
# Two experimental-profile runs, one per phantom engine, crowded and small (64x160x160), picked in pick's default
# tiling (window None: --window auto), so that the test takes about a minute, not the 5 that the demo's runs took;
# seed 1 gives five classes picks (beta-amylase, score weight 0, none).
# Picked in float32 so the pin does not depend on whether a CPU computes bf16 natively, by torch: the reference
# engine (OpenVINO, the default on CPUs, is checked against the pin within a tolerance by tests/test_pinned.py).
PROJECT = dict(runs=2, shape=(64, 160, 160), seed=1, profile="experimental", crowding=4.0, engine="mixed")
SETTINGS = dict(tta=1, window=None, amp="none", runtime="torch")


def default_soup_picks(folder, **overrides) -> dict:
    """{run: {class: [[x, y, z, score], ...]}} of the default soup on PROJECT's runs, simulated in `folder` (once),
    picked with SETTINGS and `overrides`."""
    from copick_soup.data import open_project, read_picks
    from copick_soup.simulate import simulate_project

    config = Path(folder) / "project" / "copick.json"
    if not config.exists():
        config = simulate_project(config.parent, **PROJECT)
    root = open_project(config)
    user = "pinned-" + "-".join(f"{k}-{v}" for k, v in overrides.items()) if overrides else "pinned"
    names = pick_with_default_soup(root, user, {**SETTINGS, **overrides})
    out = {}
    for run in root.runs:
        picks = read_picks(run, names, user, "0", with_scores=True)
        out[run.name] = {n: [[*map(float, p), float(s)] for p, s in zip(*picks[n])] for n in names}
    return out


def pick_with_default_soup(root, user: str, settings: dict) -> list[str]:
    """Pick every run of `root` with the default soup as `user`; returns the class names."""
    from copick_soup.ensemble import Ensemble, InferenceSettings
    from copick_soup.pick import PickOptions, pick_runs

    ensemble = Ensemble.load("default")
    pick_runs(root, ensemble, None, InferenceSettings(**settings), PickOptions(user_id=user, session_id="0"),
              echo=lambda m: None)
    return ensemble.class_names


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        picks = default_soup_picks(tmp)
    PINNED.write_text(json.dumps(dict(project=PROJECT, settings=SETTINGS, picks=picks), indent=1))
    counts = {run: sum(len(v) for v in classes.values()) for run, classes in picks.items()}
    print(f"wrote {PINNED}: {counts}", file=sys.stderr)
