"""The CZII Kaggle metric, exactly as the competition scored it.

Per class and run: TP = distinct ground-truth points with at least one pick within 0.5 x radius (Å, distance
<= threshold); FP = picks - TP; FN = truth - TP. Counts are summed over runs, then per class
F-beta = (1 + b^2) P R / (b^2 P + R) with b = 4, and the score is sum(weight * F) / sum(weight) over all classes.

Kept on purpose from the competition's code: one pick within range of two particles makes two TPs, so FP can
go negative and precision can exceed 1. Scores stay comparable with the leaderboard this way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BETA = 4.0
DISTANCE_MULTIPLIER = 0.5


def count_matches(truth: np.ndarray, picks: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) for one class in one run; `truth` and `picks` are (N, 3) positions in Å."""
    from scipy.spatial import cKDTree

    truth = np.asarray(truth, dtype=float).reshape(-1, 3)
    picks = np.asarray(picks, dtype=float).reshape(-1, 3)
    if len(truth) == 0:
        return 0, len(picks), 0
    if len(picks) == 0:
        return 0, 0, len(truth)
    matched = cKDTree(picks).query_ball_point(truth, r=threshold)
    tp = int(sum(1 for hits in matched if hits))
    return tp, len(picks) - tp, len(truth) - tp


@dataclass
class ClassScore:
    name: str
    weight: float
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp > 0 else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn > 0 else 0.0

    def fbeta(self, beta: float = BETA) -> float:
        p, r = self.precision, self.recall
        return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r > 0 else 0.0


@dataclass
class Score:
    classes: list[ClassScore]
    beta: float = BETA

    @property
    def weighted(self) -> float:
        total = sum(c.weight for c in self.classes)
        return sum(c.weight * c.fbeta(self.beta) for c in self.classes) / total if total > 0 else 0.0

    @classmethod
    def pooled(cls, scores: list[Score]) -> Score:
        """The score of every run behind `scores` together: the metric sums TP, FP and FN over runs."""
        first = scores[0]
        classes = [ClassScore(c.name, c.weight, sum(s.classes[i].tp for s in scores),
                              sum(s.classes[i].fp for s in scores), sum(s.classes[i].fn for s in scores))
                   for i, c in enumerate(first.classes)]
        return cls(classes, first.beta)

    def as_dict(self) -> dict:
        per_class = {
            c.name: dict(tp=c.tp, fp=c.fp, fn=c.fn, precision=c.precision, recall=c.recall,
                         fbeta=c.fbeta(self.beta), weight=c.weight)
            for c in self.classes
        }
        return dict(beta=self.beta, score=self.weighted, classes=per_class)

    def table(self) -> str:
        """A fixed-width per-class table with the weighted score as its last line."""
        head = f"{'class':<22}{'weight':>7}{'TP':>6}{'FP':>6}{'FN':>6}{'precision':>11}{'recall':>8}{'F4':>8}"
        lines = [head, "-" * len(head)]
        for c in self.classes:
            lines.append(f"{c.name:<22}{c.weight:>7g}{c.tp:>6}{c.fp:>6}{c.fn:>6}"
                         f"{c.precision:>11.3f}{c.recall:>8.3f}{c.fbeta(self.beta):>8.3f}")
        empty = [c.name for c in self.classes if c.tp + c.fn == 0 and c.weight > 0]
        if empty:  # a demo's small runs often hold no copy of a rare class; say why it scores 0
            lines.append(f"(no ground truth for {', '.join(empty)} in these runs: the CZII metric scores "
                         f"{'it' if len(empty) == 1 else 'them'} 0 whatever is picked)")
        lines.append("-" * len(head))
        lines.append(f"{'weighted F' + format(self.beta, 'g'):<22}{'':>44}{self.weighted:>8.3f}")
        return "\n".join(lines)


def score_picks(runs: list[tuple[dict, dict]], classes, beta: float = BETA,
                distance_multiplier: float = DISTANCE_MULTIPLIER) -> Score:
    """Score runs given as (truth, picks) pairs of {class name: (N, 3) Å arrays}; `classes` are ParticleClass.

    A class missing from a run's dict counts as having no points there.
    """
    scores = [ClassScore(c.name, c.score_weight) for c in classes]
    for truth, picks in runs:
        for cls, acc in zip(classes, scores):
            empty = np.zeros((0, 3))
            tp, fp, fn = count_matches(truth.get(cls.name, empty), picks.get(cls.name, empty),
                                       distance_multiplier * cls.radius)
            acc.tp, acc.fp, acc.fn = acc.tp + tp, acc.fp + fp, acc.fn + fn
    return Score(scores, beta)


@dataclass
class Confusion:
    """What each ground-truth particle was picked as: `counts[t, c]` particles of class t with a pick of class c
    within half *their* radius (a particle picked as two classes counts in both), `missed[t]` those with no pick
    of any class in range, `stray[c]` picks of class c in range of no particle of any class. It tells a picker
    that names particles wrong (off the diagonal) from one that misses them or fires on nothing."""

    names: list[str]
    particles: np.ndarray  # (C,) ground-truth particles per class
    counts: np.ndarray  # (C, C)
    missed: np.ndarray  # (C,)
    stray: np.ndarray  # (C,)

    def as_dict(self) -> dict:
        rows = {t: dict(particles=int(n), picked_as=dict(zip(self.names, map(int, row))), missed=int(miss))
                for t, n, row, miss in zip(self.names, self.particles, self.counts, self.missed)}
        return dict(truth=rows, stray=dict(zip(self.names, map(int, self.stray))))

    def table(self) -> str:
        """Rows: ground truth; columns: the class a pick in range names (heads cut to 11 characters)."""
        head = (f"{'truth / picked as':<22}{'particles':>10}" + "".join(f"{n[:11]:>12}" for n in self.names)
                + f"{'nothing':>9}")
        lines = [head, "-" * len(head)]
        for name, n, row, miss in zip(self.names, self.particles, self.counts, self.missed):
            lines.append(f"{name:<22}{n:>10}" + "".join(f"{v:>12}" for v in row) + f"{miss:>9}")
        lines.append(f"{'no particle (stray)':<22}{'':>10}" + "".join(f"{v:>12}" for v in self.stray))
        return "\n".join(lines)


def confusion(runs: list[tuple[dict, dict]], classes, distance_multiplier: float = DISTANCE_MULTIPLIER) -> Confusion:
    """The confusion of runs given as (truth, picks) pairs of {class name: (N, 3) Å arrays}, as `score_picks`
    takes them; a pick is in range of a particle within `distance_multiplier` x the particle's radius."""
    from scipy.spatial import cKDTree

    n = len(classes)
    particles, counts = np.zeros(n, dtype=int), np.zeros((n, n), dtype=int)
    missed, stray = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    for truth, picks in runs:
        points = [np.asarray(picks.get(c.name, np.zeros((0, 3))), dtype=float).reshape(-1, 3) for c in classes]
        trees = [cKDTree(p) if len(p) else None for p in points]
        used = [np.zeros(len(p), dtype=bool) for p in points]
        for t, cls in enumerate(classes):
            centres = np.asarray(truth.get(cls.name, np.zeros((0, 3))), dtype=float).reshape(-1, 3)
            particles[t] += len(centres)
            if not len(centres):
                continue
            hit_any = np.zeros(len(centres), dtype=bool)
            for c, tree in enumerate(trees):
                if tree is None:
                    continue
                hits = tree.query_ball_point(centres, r=distance_multiplier * cls.radius)
                found = np.array([bool(h) for h in hits])
                counts[t, c] += int(found.sum())
                hit_any |= found
                for h in hits:
                    used[c][h] = True
            missed[t] += int((~hit_any).sum())
        stray += [int((~u).sum()) for u in used]
    return Confusion([c.name for c in classes], particles, counts, missed, stray)
