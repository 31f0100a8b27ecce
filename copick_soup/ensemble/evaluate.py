"""Scoring: the soup's picks on validation runs (the search and validation during training), and one user's
picks against another's in a copick project (`copick-soup score`).

Validation runs cache each member's whole heatmap once, so trying a weighting, a threshold or a suppression
distance costs a weighted sum and a peak search, never a network pass. Picks come from `Ensemble.picks`, the
same cut and suppression `pick` applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copick_soup.data.picks import existing_picks, read_picks
from copick_soup.data.project import check_object_names, select_runs
from copick_soup.data.tomogram import grid_voxel_size
from copick_soup.ensemble.ensemble import Ensemble, blend
from copick_soup.ensemble.settings import InferenceSettings
from copick_soup.ensemble.thresholds import FLOOR, THRESHOLDS, best_thresholds, threshold_counts
from copick_soup.errors import SoupError
from copick_soup.metric.czii import BETA, ClassScore, Score, score_picks
from copick_soup.objects import classes_from_root


@dataclass
class ValRun:
    name: str
    heatmaps: list  # per member, (C, Z, Y, X) float16, or None where the member cannot run on this run
    truth: dict  # class -> (N, 3) Å


def load_val_runs(root, runs, ensemble: Ensemble, settings: InferenceSettings, truth_user: str,
                  truth_session: str | None, echo=print, object_names: dict | None = None,
                  progress=None) -> list[ValRun]:
    """Ground truth and every member's heatmaps for each validation run; a run without ground truth is an error.
    `object_names`: the project object each soup class's truth is under (data/classes.py), if not its own name;
    `progress(n)`: called as each n windows are done."""
    val = []
    names = {c: (object_names or {}).get(c, c) for c in ensemble.class_names}
    for run in runs:
        found = read_picks(run, list(names.values()), truth_user, truth_session)
        truth = {c: found[name] for c, name in names.items()}
        if sum(len(t) for t in truth.values()) == 0:
            raise SoupError(f"run {run.name}: no ground truth by user '{truth_user}' session '{truth_session}'; "
                            f"validation runs need picks to score against")
        echo(f"{run.name}: computing the heatmaps of {len(ensemble.members)} member(s)")
        # picks from these heatmaps are placed with the soup's voxel size; a run read as it is at a size within
        # 0.5% of it (10.000 Å for 10.012) has its truth moved onto that frame, so that both sides agree
        tomo_type = ensemble.tomo_type(ensemble.members[0], settings, run) or ""
        grid = grid_voxel_size(run, ensemble.voxel_size, tomo_type, settings.voxel_size)
        truth = {name: points * (ensemble.voxel_size / grid) for name, points in truth.items()}
        val.append(ValRun(run.name, ensemble.member_heatmaps(run, settings, echo, progress), truth))
    return val


def val_picks(ensemble: Ensemble, run: ValRun, weights, thresholds=None, overlap: float | None = None):
    """The picks `pick` would make on a validation run with these weights (None: no member can run there)."""
    heat = blend(run.heatmaps, weights)
    return None if heat is None else ensemble.picks(heat, thresholds, overlap)


def sweep(ensemble: Ensemble, val: list[ValRun], weights, thresholds=THRESHOLDS, beta: float = BETA):
    """({class: best threshold}, the Score at those thresholds) for one weighting, without cross-class
    suppression (each class is cut on its own)."""
    counts = np.zeros((len(ensemble.classes), len(thresholds), 3), dtype=np.int64)
    for run in val:
        counts += threshold_counts(val_picks(ensemble, run, weights, FLOOR, 0.0), run.truth, ensemble.classes,
                                   thresholds)
    return best_thresholds(counts, ensemble.classes, thresholds, beta)


def score(ensemble: Ensemble, val: list[ValRun], weights, thresholds, overlap: float = 0.0,
          beta: float = BETA) -> Score:
    """The Score of the picks at these weights, thresholds and cross-class suppression."""
    empty = {c.name: (np.zeros((0, 3)), np.zeros(0)) for c in ensemble.classes}
    pairs = []
    for run in val:
        picks = val_picks(ensemble, run, weights, thresholds, overlap)
        picks = empty if picks is None else picks
        pairs.append((run.truth, {name: positions for name, (positions, _) in picks.items()}))
    return score_picks(pairs, ensemble.classes, beta)


def score_project(root, reference_user: str, candidate_user: str, reference_session: str | None = "0",
                  candidate_session: str | None = None, run_names=None, object_names=None,
                  beta: float = BETA) -> Score:
    """The CZII score of the candidate's picks against the reference picks, summed over the chosen runs.

    `object_names` limits the classes scored (default: every particle class of the project).
    """
    classes, pairs = project_pairs(root, reference_user, candidate_user, reference_session, candidate_session,
                                   run_names, object_names)
    return score_picks(pairs, classes, beta=beta)


def project_pairs(root, reference_user: str, candidate_user: str, reference_session: str | None = "0",
                  candidate_session: str | None = None, run_names=None, object_names=None) -> tuple[list, list]:
    """(classes, [(truth, picks) per run]) as `score_picks` and `confusion` take them; no picks by either user
    in the chosen runs is an error naming who has picks there (a typo would score 0 silently)."""
    classes = classes_from_root(root)
    if object_names:
        check_object_names(root, object_names)
        classes = [c for c in classes if c.name in object_names]
    names = [c.name for c in classes]
    runs = select_runs(root, run_names)
    for role, user, session in (("ground truth", reference_user, reference_session),
                                ("picks", candidate_user, candidate_session)):
        if not any(existing_picks(run, names, user, session) for run in runs):
            raise SoupError(f"no {role} by user '{user}' {f'session {session!r}' if session else 'in any session'} in "
                            f"{'these runs' if run_names else 'this project'}; {pick_owners(runs)}")
    return classes, [(read_picks(run, names, reference_user, reference_session),
                      read_picks(run, names, candidate_user, candidate_session)) for run in runs]


def pick_owners(runs, most: int = 8) -> str:
    """Who has picks in these runs, as 'user/session' pairs, for an error message."""
    owners = sorted({f"{p.user_id}/{p.session_id}" for run in runs for p in run.picks})
    if not owners:
        return "they hold no picks at all"
    more = f" and {len(owners) - most} more" if len(owners) > most else ""
    return f"picks here are by (user/session) {', '.join(owners[:most])}{more}"


def threshold_curves(root, reference_user: str, candidate_user: str, reference_session: str | None = "0",
                     candidate_session: str | None = None, run_names=None, object_names=None, beta: float = BETA,
                     thresholds=THRESHOLDS) -> dict:
    """{class: [F-beta of the candidate's picks cut at each threshold]}, summed over the runs, from the scores the
    picks carry (`score --plot`; score the USER-candidates picks to see below the soup's thresholds)."""
    classes = classes_from_root(root)
    if object_names:
        classes = [c for c in classes if c.name in object_names]
    names = [c.name for c in classes]
    counts = np.zeros((len(classes), len(thresholds), 3), dtype=np.int64)
    for run in select_runs(root, run_names):
        truth = read_picks(run, names, reference_user, reference_session)
        counts += threshold_counts(read_picks(run, names, candidate_user, candidate_session, with_scores=True),
                                   truth, classes, thresholds)
    return {c.name: [ClassScore(c.name, c.score_weight, *map(int, counts[i, t])).fbeta(beta)
                     for t in range(len(thresholds))] for i, c in enumerate(classes)}
