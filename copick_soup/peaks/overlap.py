"""Cross-class suppression: one particle, one class.

Each class's heatmap is searched on its own, so a particle can be picked twice: by its own class and, weaker, by a
class that looks alike (beta-galactosidase firing on apo-ferritin or ribosomes, say). Two particles cannot share
a centre, so a pick is dropped when a stronger peak of another class lies closer than `overlap` x the smaller of
the two radii (particles that touch are at least the sum of their radii apart, so `overlap` <= 1 never merges
two real particles). The rule is pairwise, not greedy: a pick goes if any such stronger peak exists, whether or
not that peak passes its own class's threshold. So peaks are searched down to the lowest class threshold, then
suppressed, then thresholded per class (`finish_picks`); the soup search does the same and chooses `overlap` on
the validation runs (0 switches it off).
"""

from __future__ import annotations

import numpy as np

from copick_soup.peaks.nms import class_thresholds


def candidate_thresholds(classes, thresholds, overlap: float) -> list[float]:
    """Thresholds for the peak search: each class's own, or with suppression the lowest of all (a pick of class c
    can only be suppressed by a peak above t_c >= that lowest threshold)."""
    per_class = class_thresholds(classes, thresholds)
    return [min(per_class)] * len(per_class) if overlap > 0 else per_class


def suppress_overlaps(picks: dict, classes, overlap: float) -> dict:
    """{class: (Å positions, scores)} without the picks that a stronger peak of another class overlaps."""
    if overlap <= 0:
        return picks
    from scipy.spatial import cKDTree

    names = [c.name for c in classes]
    radius = np.array([c.radius for c in classes], dtype=np.float64)
    pos = np.concatenate([np.reshape(picks[n][0], (-1, 3)) for n in names])
    score = np.concatenate([picks[n][1] for n in names])
    label = np.concatenate([np.full(len(picks[n][1]), c) for c, n in enumerate(names)])
    pairs = cKDTree(pos).query_pairs(overlap * radius.max(), output_type="ndarray")
    i, j = pairs.T if len(pairs) else (np.zeros(0, int), np.zeros(0, int))
    close = np.linalg.norm(pos[i] - pos[j], axis=1) < overlap * np.minimum(radius[label[i]], radius[label[j]])
    clash = close & (label[i] != label[j]) & (score[i] != score[j])
    drop = np.zeros(len(score), dtype=bool)
    drop[np.where(score[i] < score[j], i, j)[clash]] = True
    keep = {c: ~drop[label == c] for c in range(len(names))}
    return {n: (picks[n][0][keep[c]], picks[n][1][keep[c]]) for c, n in enumerate(names)}


def finish_picks(picks: dict, classes, thresholds, overlap: float) -> dict:
    """Suppress cross-class overlaps among the candidates, then keep each class's picks above its threshold."""
    picks = suppress_overlaps(picks, classes, overlap)
    per_class = class_thresholds(classes, thresholds)
    return {c.name: (picks[c.name][0][picks[c.name][1] > t], picks[c.name][1][picks[c.name][1] > t])
            for c, t in zip(classes, per_class)}
