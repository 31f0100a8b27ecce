"""Label-free thresholds from each class's own score distribution: the valley between its humps.

A soup's thresholds are searched on validation runs, so they hold only as long as the heatmap's score scale does.
On tomograms from another microscope, another reconstruction or another simulator, a class's particles can peak at
0.3 where they peaked at 0.7, and a fixed threshold then keeps every pick right but misses four in ten (issue 46).
The candidate peaks `pick` keeps (every local maximum above CANDIDATE_FLOOR, with its score) show the scale
without any labels: background peaks pile up at low scores, the particles form a second hump above them, and the
QC histograms show the valley between. `valley_thresholds` puts each class's threshold in that valley.

Deterministic: a fixed bandwidth and grid, no random starts. A class whose scores show no second hump (absent from
the run, or too few particles to tell) keeps the fallback threshold, and the reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP = 0.005  # of the grid the density is evaluated on; scores are trained towards 1 at particle centres, 0 elsewhere,
# but a regression head overshoots: a channel that fires hard peaks at 1.5, and its valley may lie above 1
BANDWIDTH = 0.03  # of the Gaussian kernel density estimate, in score units
MIN_PARTICLES = 3  # candidates the upper hump must hold to be taken for particles
MAX_VALLEY = 0.5  # the valley's density over the lower of its two humps' peaks: deeper than this, or no valley


@dataclass(frozen=True)
class Calibrated:
    threshold: float
    found: bool  # False: no valley, `threshold` is the fallback
    reason: str  # what was found, for the log


def grid(scores: np.ndarray) -> np.ndarray:
    """Score values from 0 to past the highest score (at least 1), STEP apart."""
    top = max(1.0, float(np.max(scores, initial=0.0))) + 3 * BANDWIDTH
    return np.arange(0.0, top + STEP, STEP)


def density(scores: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A Gaussian kernel density estimate of the scores at the values `at`, in candidates per score unit."""
    diff = (at[:, None] - np.asarray(scores, dtype=np.float64)[None, :]) / BANDWIDTH
    return np.exp(-0.5 * diff ** 2).sum(1) / (BANDWIDTH * np.sqrt(2 * np.pi))


def valley(scores, fallback: float, floor: float = 0.05) -> Calibrated:
    """The threshold in the valley between the background's hump and the particles' hump of one class's candidate
    scores (all peaks above `floor`), or `fallback` where there is no such valley."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[scores > floor]
    if len(scores) < 2 * MIN_PARTICLES:
        return Calibrated(fallback, False, f"{len(scores)} candidates: too few for a valley")
    at = grid(scores)
    dens = density(scores, at)
    valleys = []
    for i in range(1, len(at) - 1):  # every local minimum above the floor
        if at[i] <= floor or not (dens[i] <= dens[i - 1] and dens[i] < dens[i + 1]):
            continue
        above = int((scores > at[i]).sum())
        # depth: the minimum against the lower of the highest humps on either side, not its neighbouring wiggles
        depth = dens[i] / min(dens[:i].max(), dens[i:].max())
        if above >= MIN_PARTICLES and depth <= MAX_VALLEY:
            valleys.append((i, depth, above))
    if not valleys:
        return Calibrated(fallback, False, f"one hump in {len(scores)} candidates: no valley")
    cut, depth, above = min(valleys, key=lambda v: v[1])  # the deepest (the highest was tried: no better)
    return Calibrated(round(float(at[cut]), 3), True,
                      f"valley at {at[cut]:.3f} ({above} of {len(scores)} candidates above, depth {depth:.2f})")


def valley_thresholds(candidates: dict, fallback: dict, floor: float = 0.05) -> dict:
    """{class: Calibrated} for one run's candidates {class: (positions, scores)} (or several runs' pooled)."""
    return {name: valley(np.asarray(candidates[name][1]) if name in candidates else np.zeros(0), fallback[name],
                         floor) for name in fallback}


def calibrate(candidates: dict, thresholds: dict, keep=(), where: str = "") -> tuple[dict, str]:
    """(thresholds with each class's moved to its valley, except the classes in `keep` (given by hand); a line
    saying what moved and what fell back, for the log)."""
    found = valley_thresholds(candidates, {n: t for n, t in thresholds.items() if n not in keep})
    notes = [f"{n} {c.threshold:g}" + ("" if c.found else f" (soup's: {c.reason})") for n, c in found.items()]
    return ({**thresholds, **{n: c.threshold for n, c in found.items()}},
            f"{where}valley thresholds: {', '.join(notes)}")
