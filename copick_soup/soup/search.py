"""Ensemble search: member weights on a simplex grid and per-class peak thresholds, by CZII F4 on validation runs.

Each member's heatmaps are computed once per validation run and cached (`ensemble.evaluate.ValRun`), so trying a
weighting costs only a weighted sum and a peak search, never a network pass; the thresholds of a weighting come
from one sweep (`ensemble.thresholds`).
"""

from __future__ import annotations

import itertools

import numpy as np

from copick_soup.ensemble import Ensemble
from copick_soup.ensemble.evaluate import ValRun, score, sweep
from copick_soup.errors import SoupError

OVERLAPS = (0.0, 0.5, 1.0)  # cross-class suppression distances tried, x the smaller radius (0: off)
# Suppression drops picks, so a rule learned on a handful of rare particles can drop a whole class on new runs
# (benchmarks/results/finetune.md: with one validation run, rare classes fell to 0 on the held-out runs).
MIN_OVERLAP_RUNS = 4


def check_step(step: float) -> int:
    """The number of steps in 1; a step that does not divide 1 is refused."""
    k = int(round(1 / step)) if 0 < step <= 1 else 0
    if k == 0 or abs(k * step - 1) > 1e-9:
        raise SoupError(f"--step {step:g}: must divide 1 (e.g. 0.5, 0.25, 0.1)")
    return k


def simplex_grid(n: int, step: float) -> list[tuple]:
    """All weight vectors of n non-negative multiples of `step` that sum to 1 (at least one member > 0)."""
    k = check_step(step)
    return [tuple(c / k for c in combo) for combo in itertools.product(range(k + 1), repeat=n) if sum(combo) == k]


def search(ensemble: Ensemble, val: list[ValRun], step: float = 0.25, tolerance: float = 0.01, echo=print) -> dict:
    """The best weighting and thresholds; also every single member's own best, for comparison.

    Weightings within `tolerance` F4 of the best count as equally good (on a few validation runs such
    differences are noise), and of those the most even one is kept: averaging more members generalises better
    than leaning on whichever member was luckiest on the validation runs."""
    results = []
    for weights in simplex_grid(len(ensemble.members), step):
        thresholds, found = sweep(ensemble, val, weights)
        results.append(dict(weights=list(weights), thresholds=thresholds,
                            per_class={c.name: c.fbeta() for c in found.classes}, score=found.weighted))
    best = dict(most_even(results, tolerance), overlap=0.0)
    singles = [r for r in results if max(r["weights"]) == 1.0]
    echo(f"searched {len(results)} weighting(s): best F4 {best['score']:.3f} with weights {best['weights']}")
    best = choose_overlap(ensemble, val, best, tolerance, echo)
    return dict(best=best, singles=singles, tried=len(results))


def choose_overlap(ensemble: Ensemble, val: list[ValRun], best: dict, tolerance: float = 0.01, echo=print) -> dict:
    """For the chosen weighting and thresholds, the cross-class suppression distance that scores best. It stays
    off (0) unless it beats off by more than `tolerance` on at least MIN_OVERLAP_RUNS validation runs; a tie
    keeps the smaller distance."""
    if len(val) < MIN_OVERLAP_RUNS:
        echo(f"cross-class suppression: off (tried with {MIN_OVERLAP_RUNS} or more validation runs, "
             f"{len(val)} given)")
        return dict(best, overlap_scores={"0": best["score"]})
    tried = {0.0: best}
    for overlap in OVERLAPS[1:]:
        found = score(ensemble, val, best["weights"], best["thresholds"], overlap)
        tried[overlap] = dict(best, per_class={c.name: c.fbeta() for c in found.classes}, score=found.weighted,
                              overlap=overlap)
    chosen = max(tried.values(), key=lambda r: (r["score"], -r["overlap"]))
    if chosen["score"] <= best["score"] + tolerance:
        chosen = best
    echo("cross-class suppression: " + ", ".join(f"{o:g} -> F4 {r['score']:.3f}" for o, r in tried.items())
         + f"; chosen {chosen['overlap']:g}")
    return dict(chosen, overlap_scores={f"{o:g}": r["score"] for o, r in tried.items()})


def most_even(results: list[dict], tolerance: float) -> dict:
    """Of the weightings scoring within `tolerance` of the best, the one with the most even weights (entropy)."""
    top = max(r["score"] for r in results)

    def entropy(r):
        w = np.asarray(r["weights"], dtype=float)
        w = w[w > 0]
        return float(-(w * np.log(w)).sum())

    return max((r for r in results if r["score"] >= top - tolerance), key=lambda r: (entropy(r), r["score"]))
