"""Per-class peak thresholds by CZII F-beta: count matches at every candidate threshold, keep each class's best.

Max-pool NMS does not depend on the threshold, so peaks are found once at the lowest candidate and each
threshold just keeps the peaks scoring above it. Classes are scored independently, so each gets its own.
"""

from __future__ import annotations

import numpy as np

from copick_soup.metric.czii import BETA, DISTANCE_MULTIPLIER, ClassScore, Score, count_matches

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)  # below 0.05 a heatmap is noise, whatever F4 says
FLOOR = float(THRESHOLDS[0]) - 1e-6  # the peaks every candidate threshold chooses from


def threshold_counts(picks: dict, truth: dict, classes, thresholds=THRESHOLDS) -> np.ndarray:
    """(C, T, 3) TP, FP, FN per class and candidate threshold for one run's picks at the floor; `picks` is
    {class: (Å positions, scores)} (None: no member could run, every particle is missed), `truth` {class: Å}."""
    counts = np.zeros((len(classes), len(thresholds), 3), dtype=np.int64)
    for c, cls in enumerate(classes):
        if picks is None:
            counts[c, :, 2] = len(truth[cls.name])
            continue
        positions, scores = picks[cls.name]
        for t, threshold in enumerate(thresholds):
            kept = positions[scores > threshold]
            counts[c, t] = count_matches(truth[cls.name], kept, DISTANCE_MULTIPLIER * cls.radius)
    return counts


def best_thresholds(counts: np.ndarray, classes, thresholds=THRESHOLDS, beta: float = BETA) -> tuple[dict, Score]:
    """Per class, the threshold in the middle of its best F-beta (see `smooth`), and the Score there."""
    chosen, scores = {}, []
    for c, cls in enumerate(classes):
        per_t = [ClassScore(cls.name, cls.score_weight, *map(int, counts[c, t])) for t in range(len(thresholds))]
        i = int(np.argmax(smooth(np.array([s.fbeta(beta) for s in per_t]))))
        chosen[cls.name] = float(thresholds[i])
        scores.append(per_t[i])
    return chosen, Score(scores, beta)


def smooth(f: np.ndarray) -> np.ndarray:
    """F-beta averaged with its neighbouring thresholds. A few validation particles make the curve spiky, and a
    threshold on a lone spike does not carry over to new runs; the middle of a broad optimum does."""
    padded = np.pad(f, 1, mode="edge")
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3
