"""Cross-class suppression: one particle, one class.

Each class's heatmap is searched on its own, so a particle can be picked twice: by its own class and, weaker, by a
class that looks alike (beta-galactosidase firing on apo-ferritin or ribosomes, say). Two particles cannot share
a centre, so of two picks of different classes closer than `overlap` x the smaller of their radii, the weaker
goes (particles that touch are at least the sum of their radii apart, so `overlap` <= 1 never merges two real
particles). It runs on the final picks, each already above its own class threshold, and compares raw heatmap
values: every class is trained towards 1 at its particle centres. The rule is pairwise, not greedy: a pick goes
if any stronger clashing pick exists. The soup search chooses `overlap` on the validation runs (0: off).

`one_class` is the decision that travels to tomograms no simulator of ours made: every pick competes at the
physical limit (`overlap` 1: two centres closer than the smaller radius are one particle), by its score relative to
its own class's threshold, since on a foreign engine one class's channel can run high on every particle (issue 46).
"""

from __future__ import annotations

import numpy as np


def suppress_overlaps(picks: dict, classes, overlap: float, scale: dict | None = None) -> dict:
    """{class: (Å positions, scores)} without the picks that a stronger peak of another class overlaps; with
    `scale` ({class: value}), strength is a pick's score divided by its class's value."""
    if overlap <= 0:
        return picks
    from scipy.spatial import cKDTree

    names = [c.name for c in classes]
    radius = np.array([c.radius for c in classes], dtype=np.float64)
    pos = np.concatenate([np.reshape(picks[n][0], (-1, 3)) for n in names])
    score = np.concatenate([np.asarray(picks[n][1], dtype=np.float64) / (scale or {}).get(n, 1.0) for n in names])
    label = np.concatenate([np.full(len(picks[n][1]), c) for c, n in enumerate(names)])
    pairs = cKDTree(pos).query_pairs(overlap * radius.max(), output_type="ndarray")
    i, j = pairs.T if len(pairs) else (np.zeros(0, int), np.zeros(0, int))
    close = np.linalg.norm(pos[i] - pos[j], axis=1) < overlap * np.minimum(radius[label[i]], radius[label[j]])
    clash = close & (label[i] != label[j]) & (score[i] != score[j])
    drop = np.zeros(len(score), dtype=bool)
    drop[np.where(score[i] < score[j], i, j)[clash]] = True
    keep = {c: ~drop[label == c] for c in range(len(names))}
    return {n: (picks[n][0][keep[c]], picks[n][1][keep[c]]) for c, n in enumerate(names)}


def one_class(picks: dict, classes, thresholds: dict) -> dict:
    """One particle, one class: of picks closer than the smaller of their radii, the one furthest above its own
    class's threshold (score / threshold) stays."""
    return suppress_overlaps(picks, classes, 1.0, scale={c.name: max(float(thresholds[c.name]), 1e-6)
                                                         for c in classes})


def cut_picks(candidates: dict, classes, thresholds: dict, overlap: float, one: bool = False) -> dict:
    """The picks `pick` makes from candidate peaks found at a lower threshold: each class's peaks above its
    threshold (strictly, as the peak search cuts), then cross-class suppression (`one_class` in its place with
    `one`). A local maximum is one whatever the threshold, so this equals searching at `thresholds` directly:
    re-thresholding needs no network."""
    kept = {}
    for c in classes:
        positions, scores = candidates[c.name]
        keep = np.asarray(scores) > thresholds[c.name]
        kept[c.name] = (np.reshape(positions, (-1, 3))[keep], np.asarray(scores)[keep])
    return one_class(kept, classes, thresholds) if one else suppress_overlaps(kept, classes, overlap)
