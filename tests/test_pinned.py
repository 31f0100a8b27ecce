"""The default soup's picks on the demo's runs are those pinned in tests/data/default-soup-picks.json: a change
that is not meant to change picks (a restructuring, a faster engine) must leave every pick where it was.
A change meant to move picks re-pins with `python tests/data/pin_default_picks.py` and says so in its commit."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))

from pin_default_picks import DEMO, PINNED, SETTINGS, demo_picks  # noqa: E402


@pytest.mark.slow
def test_the_default_soup_picks_what_it_was_pinned_to(tmp_path):
    pinned = json.loads(PINNED.read_text())
    assert (pinned["demo"], pinned["settings"]) == (json.loads(json.dumps(DEMO)), SETTINGS)
    picks = demo_picks(tmp_path)
    assert sorted(picks) == sorted(pinned["picks"])
    for run, classes in pinned["picks"].items():
        for name, expected in classes.items():
            got = np.asarray(picks[run][name]).reshape(-1, 4)
            expected = np.asarray(expected).reshape(-1, 4)
            assert got.shape == expected.shape, f"{run} {name}: {len(got)} picks, pinned {len(expected)}"
            # x, y, z in Å and the score: float32 networks, so only summation order could move them
            np.testing.assert_allclose(got, expected, atol=1e-3, err_msg=f"{run} {name}")
    assert sum(len(v) for classes in pinned["picks"].values() for v in classes.values()) > 50
