"""Score one user's picks against another's in a copick project."""

from __future__ import annotations

from copick_soup.data.picks import existing_picks, read_picks
from copick_soup.data.project import check_object_names, select_runs
from copick_soup.errors import SoupError
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
    runs = select_runs(root, run_names)
    for role, user, session in (("ground truth", reference_user, reference_session),
                                ("picks", candidate_user, candidate_session)):
        if not any(existing_picks(run, names, user, session) for run in runs):  # a typo would score 0 silently
            raise SoupError(f"no {role} by user '{user}' {f'session {session!r}' if session else 'in any session'} in "
                            f"{'these runs' if run_names else 'this project'}; {pick_owners(runs)}")
    pairs = [(read_picks(run, names, reference_user, reference_session),
              read_picks(run, names, candidate_user, candidate_session)) for run in runs]
    return score_picks(pairs, classes, beta=beta)


def pick_owners(runs, most: int = 8) -> str:
    """Who has picks in these runs, as 'user/session' pairs, for an error message."""
    owners = sorted({f"{p.user_id}/{p.session_id}" for run in runs for p in run.picks})
    if not owners:
        return "they hold no picks at all"
    more = f" and {len(owners) - most} more" if len(owners) > most else ""
    return f"picks here are by (user/session) {', '.join(owners[:most])}{more}"
