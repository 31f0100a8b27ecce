"""Ensemble search: member weights on a simplex grid and per-class peak thresholds, by CZII F4 on validation runs.

Each member's heatmaps are computed once per validation run and cached, so trying a weighting costs only a
weighted sum and a peak search, never a network pass. Thresholds need no second peak search either: max-pool
NMS does not depend on the threshold, so peaks are found once at the lowest threshold and each candidate
threshold just keeps the peaks scoring above it. Classes are scored independently, so each class gets its
own best threshold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from copick_soup.data import read_picks
from copick_soup.errors import SoupError
from copick_soup.metric import count_matches
from copick_soup.metric.czii import BETA, DISTANCE_MULTIPLIER, ClassScore, Score
from copick_soup.peaks.nms import heatmaps_to_picks
from copick_soup.peaks.overlap import suppress_overlaps

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)  # below 0.05 a heatmap is noise, whatever F4 says
OVERLAPS = (0.0, 0.5, 1.0)  # cross-class suppression distances tried, x the smaller radius (0: off)
# Suppression drops picks, so a rule learned on a handful of rare particles can drop a whole class on new runs
# (benchmarks/finetune.py, one validation run: 0.96 there with it, rare classes at 0 on the held-out runs).
MIN_OVERLAP_RUNS = 4


@dataclass
class ValRun:
    name: str
    heatmaps: list  # per member, (C, Z, Y, X) float16
    truth: dict  # class -> (N, 3) Å


def member_heatmaps(run, members, voxel_size: float, window: int, overlap: float, tta: int, device: str,
                    amp: str = "auto", echo=print) -> list:
    """(C, Z, Y, X) float16 heatmaps of every member on one run (None where the run lacks its type)."""
    from copick_soup.infer.pick import run_volume
    from copick_soup.infer.tta import tta_views
    from copick_soup.infer.windows import TorchPredictor, predict_volume
    from copick_soup.train.loop import amp_dtype

    out = []
    for model, manifest, _ in members:
        try:
            volume = run_volume(run, voxel_size, manifest["tomo_type"], echo)
        except SoupError as err:
            echo(f"{err}; member {manifest['name']} left out on this run")
            out.append(None)
            continue
        predictor = TorchPredictor(model, device, amp_dtype(amp, device), tta_views(tta))
        heat = predict_volume(predictor, volume, len(manifest["classes"]), window, overlap, device=device)
        out.append(heat.astype(np.float16))
    return out


def load_val_runs(root, runs, soup, truth_user: str, truth_session: str, window=64, overlap=0.25, tta=1,
                  device="cpu", amp="auto", echo=print) -> list[ValRun]:
    names = [c.name for c in soup.classes]
    val = []
    for run in runs:
        truth = read_picks(run, names, truth_user, truth_session)
        if sum(len(t) for t in truth.values()) == 0:
            raise SoupError(f"run {run.name}: no ground truth by user '{truth_user}' session '{truth_session}'; "
                            f"validation runs need picks to score against")
        echo(f"{run.name}: computing the heatmaps of {len(soup.members)} member(s)")
        val.append(ValRun(run.name, member_heatmaps(run, soup.members, soup.voxel_size, window, overlap, tta,
                                                    device, amp, echo), truth))
    return val


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


def blend(heatmaps: list, weights) -> np.ndarray | None:
    """Weighted mean of the members that ran (weights renormalised over them, as `pick` does)."""
    used = [(h, w) for h, w in zip(heatmaps, weights) if h is not None and w > 0]
    if not used:
        return None
    total = sum(w for _, w in used)
    return sum(h.astype(np.float32) * np.float32(w / total) for h, w in used)


def threshold_counts(val: list[ValRun], weights, classes, voxel_size: float, nms_scale: float = 0.5,
                     thresholds=THRESHOLDS) -> np.ndarray:
    """(C, T, 3) TP, FP, FN per class and candidate threshold for one weighting, summed over the runs."""
    counts = np.zeros((len(classes), len(thresholds), 3), dtype=np.int64)
    for run in val:
        heat = blend(run.heatmaps, weights)
        if heat is None:
            for c, cls in enumerate(classes):
                counts[c, :, 2] += len(run.truth[cls.name])
            continue
        picks = heatmaps_to_picks(heat, classes, voxel_size, float(thresholds[0]) - 1e-6, nms_scale)
        for c, cls in enumerate(classes):
            positions, scores = picks[cls.name]
            for t, threshold in enumerate(thresholds):
                kept = positions[scores > threshold]
                counts[c, t] += count_matches(run.truth[cls.name], kept, DISTANCE_MULTIPLIER * cls.radius)
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


def sweep_thresholds(val: list[ValRun], weights, classes, voxel_size: float, nms_scale: float = 0.5,
                     thresholds=THRESHOLDS, beta: float = BETA) -> tuple[dict, Score]:
    """({class: best threshold}, the Score at those thresholds) for one weighting."""
    counts = threshold_counts(val, weights, classes, voxel_size, nms_scale, thresholds)
    return best_thresholds(counts, classes, thresholds, beta)


def smooth(f: np.ndarray) -> np.ndarray:
    """F-beta averaged with its neighbouring thresholds. A few validation particles make the curve spiky, and a
    threshold on a lone spike does not carry over to new runs; the middle of a broad optimum does."""
    padded = np.pad(f, 1, mode="edge")
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3


def search(val: list[ValRun], classes, voxel_size: float, n_members: int, step: float = 0.25,
           nms_scale: float = 0.5, tolerance: float = 0.01, echo=print) -> dict:
    """The best weighting and thresholds; also every single member's own best, for comparison.

    Weightings within `tolerance` F4 of the best count as equally good (on a few validation runs such
    differences are noise), and of those the most even one is kept: averaging more members generalises better
    than leaning on whichever member was luckiest on the validation runs."""
    results = []
    for weights in simplex_grid(n_members, step):
        thresholds, score = sweep_thresholds(val, weights, classes, voxel_size, nms_scale)
        results.append(dict(weights=list(weights), thresholds=thresholds,
                            per_class={c.name: c.fbeta() for c in score.classes}, score=score.weighted))
    best = dict(most_even(results, tolerance), overlap=0.0)
    singles = [r for r in results if max(r["weights"]) == 1.0]
    echo(f"searched {len(results)} weighting(s): best F4 {best['score']:.3f} with weights {best['weights']}")
    best = choose_overlap(val, best, classes, voxel_size, nms_scale, tolerance, echo)
    return dict(best=best, singles=singles, tried=len(results))


def choose_overlap(val: list[ValRun], best: dict, classes, voxel_size: float, nms_scale: float,
                   tolerance: float = 0.01, echo=print) -> dict:
    """For the chosen weighting and thresholds, the cross-class suppression distance that scores best. It stays
    off (0) unless it beats off by more than `tolerance` on at least MIN_OVERLAP_RUNS validation runs; a tie
    keeps the smaller distance."""
    if len(val) < MIN_OVERLAP_RUNS:
        echo(f"cross-class suppression: off (tried with {MIN_OVERLAP_RUNS} or more validation runs, "
             f"{len(val)} given)")
        return dict(best, overlap_scores={"0": best["score"]})
    tried = {0.0: best}
    for overlap in OVERLAPS[1:]:
        score = score_picks(val, best["weights"], classes, voxel_size, nms_scale, best["thresholds"], overlap)
        tried[overlap] = dict(best, per_class={c.name: c.fbeta() for c in score.classes}, score=score.weighted,
                              overlap=overlap)
    chosen = max(tried.values(), key=lambda r: (r["score"], -r["overlap"]))
    if chosen["score"] <= best["score"] + tolerance:
        chosen = best
    echo("cross-class suppression: " + ", ".join(f"{o:g} -> F4 {r['score']:.3f}" for o, r in tried.items())
         + f"; chosen {chosen['overlap']:g}")
    return dict(chosen, overlap_scores={f"{o:g}": r["score"] for o, r in tried.items()})


def score_picks(val: list[ValRun], weights, classes, voxel_size: float, nms_scale: float, thresholds: dict,
                overlap: float, beta: float = BETA) -> Score:
    """The Score of `pick`'s picks at these weights, thresholds and cross-class suppression."""
    counts = np.zeros((len(classes), 3), dtype=np.int64)
    for run in val:
        heat = blend(run.heatmaps, weights)
        if heat is None:  # no member could run: every particle is missed
            picks = {c.name: (np.zeros((0, 3)), np.zeros(0)) for c in classes}
        else:
            picks = heatmaps_to_picks(heat, classes, voxel_size, thresholds, nms_scale)
            picks = suppress_overlaps(picks, classes, overlap)
        for c, cls in enumerate(classes):
            counts[c] += count_matches(run.truth[cls.name], picks[cls.name][0], DISTANCE_MULTIPLIER * cls.radius)
    return Score([ClassScore(cls.name, cls.score_weight, *map(int, counts[c])) for c, cls in enumerate(classes)],
                 beta)


def most_even(results: list[dict], tolerance: float) -> dict:
    """Of the weightings scoring within `tolerance` of the best, the one with the most even weights (entropy)."""
    top = max(r["score"] for r in results)

    def entropy(r):
        w = np.asarray(r["weights"], dtype=float)
        w = w[w > 0]
        return float(-(w * np.log(w)).sum())

    return max((r for r in results if r["score"] >= top - tolerance), key=lambda r: (entropy(r), r["score"]))
