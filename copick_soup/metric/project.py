"""Score one user's picks against another's in a copick project."""

from __future__ import annotations

from copick_soup.data.picks import read_picks
from copick_soup.data.project import check_object_names, select_runs
from copick_soup.metric.czii import BETA, Score, score_picks
from copick_soup.objects import classes_from_root


def score_project(root, reference_user: str, candidate_user: str, reference_session: str | None = "0",
                  candidate_session: str | None = None, run_names=None, object_names=None,
                  beta: float = BETA) -> Score:
    """The CZII score of the candidate's picks against the reference picks, summed over the chosen runs.

    `object_names` limits the classes scored (default: every particle class of the project).
    """
    classes = classes_from_root(root)
    if object_names:
        check_object_names(root, object_names)
        classes = [c for c in classes if c.name in object_names]
    names = [c.name for c in classes]
    pairs = []
    for run in select_runs(root, run_names):
        truth = read_picks(run, names, reference_user, reference_session)
        picks = read_picks(run, names, candidate_user, candidate_session)
        pairs.append((truth, picks))
    return score_picks(pairs, classes, beta=beta)
