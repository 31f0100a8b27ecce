"""Read picks as Å arrays per class, and write a run's picks all at once (or not at all)."""

from __future__ import annotations

import fnmatch

import numpy as np

from copick_soup.errors import SoupError


def copick_id(value: str | None) -> str | None:
    """A user or session ID as copick stores it. copick rewrites invalid characters ('_' -> '-') when it writes
    but not when it searches, so every read and write here goes through the same rewrite; otherwise a user
    'my_lab' would never find its own picks, nor be stopped from overwriting them."""
    if value is None:
        return None
    import warnings

    from copick.util.escape import sanitize_name

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sanitize_name(str(value))


def user_session(user_id: str, session_id: str | None) -> tuple[str, str | None]:
    """(user, session pattern or None for every session) from copick's `user/session` style or the two given
    apart: `data-portal/*`, or user `data-portal` with session `*` (the portal stores one session per annotation
    file, so its ground truth is every session of user `data-portal`)."""
    if "/" in user_id:
        user_id, session_id = user_id.split("/", 1)
    return user_id, None if session_id in (None, "", "*") else session_id


def _picks_of(run, name: str, user_id: str, session_id: str | None) -> list:
    user_id, session_id = user_session(user_id, session_id)
    kwargs = dict(object_name=name, user_id=copick_id(user_id))
    if session_id is None or not any(c in session_id for c in "*?["):
        return run.get_picks(**kwargs, **({} if session_id is None else dict(session_id=copick_id(session_id))))
    return [p for p in run.get_picks(**kwargs) if fnmatch.fnmatchcase(p.session_id, session_id)]


def read_picks(run, names, user_id: str, session_id: str | None = None, with_scores: bool = False) -> dict:
    """{class name: (N, 3) positions in Å, (x, y, z)} for a user and session: None or `*` means every session,
    a glob (`1*`) the sessions it matches, and `user/session` in `user_id` gives both (see `user_session`).

    Positions include the translation of each pick's transform (copick's `full_positions`), which is where
    refinement puts its shifts. With `with_scores`, values are `(positions, scores)` pairs.
    """
    out = {}
    for name in names:
        positions, scores = [np.zeros((0, 3))], [np.zeros(0)]
        for picks in _picks_of(run, name, user_id, session_id):
            if picks.points:
                positions.append(picks.full_positions())
                scores.append(picks.scores())
        pos, sc = np.concatenate(positions), np.concatenate(scores)
        out[name] = (pos, sc) if with_scores else pos
    return out


def existing_picks(run, names, user_id: str, session_id: str) -> list[str]:
    """Names of the classes for which the run already has picks by this user and session."""
    return [name for name in names if _picks_of(run, name, user_id, session_id)]


def write_picks(run, picks: dict, user_id: str, session_id: str, overwrite: bool = False) -> None:
    """Write {class name: (positions (N, 3) Å, scores (N,))} for one run, every class or none.

    Refuses (before touching anything) when any of these classes already has picks by this user and session,
    unless `overwrite`. If a write fails half-way, the classes already written are put back as they were, so a
    crash never leaves a run with a mix of old and new picks. Classes with no picks get an empty picks file,
    which records that the run was processed.
    """
    user_id, session_id = copick_id(user_id), copick_id(session_id)
    taken = existing_picks(run, picks, user_id, session_id)
    if taken and not overwrite:
        raise SoupError(
            f"run {run.name}: picks by user '{user_id}' session '{session_id}' already exist for "
            f"{', '.join(taken)}; pass --overwrite to replace them"
        )
    for name, (positions, scores) in picks.items():
        positions = np.asarray(positions, dtype=float).reshape(-1, 3)
        if len(scores) != len(positions) or not np.isfinite(positions).all():
            raise SoupError(f"run {run.name}: invalid picks for {name} (non-finite or mismatched scores)")

    undo = []  # (picks object, previous points or None when we created it)
    try:
        for name, (positions, scores) in picks.items():
            target = run.new_picks(object_name=name, session_id=session_id, user_id=user_id, exist_ok=True)
            undo.append((target, _previous_points(target) if name in taken else None))
            target.from_numpy(np.asarray(positions, dtype=float).reshape(-1, 3), scores=np.asarray(scores, float))
    except Exception as err:
        _roll_back(undo)
        raise SoupError(f"run {run.name}: writing picks failed, nothing was changed ({err})") from err


def _previous_points(target):
    """The points a write replaces, to put back on failure. A file that no longer parses (a process killed while
    writing it) has nothing worth restoring: None, and a rollback removes it."""
    try:
        return list(target.points)
    except ValueError:  # json.JSONDecodeError and pydantic's ValidationError are both ValueErrors
        return None


def _roll_back(undo) -> None:
    for target, previous in reversed(undo):
        try:
            if previous is None:
                target.delete()
            else:
                target.points = previous
                target.store()
        except Exception:  # noqa: BLE001 - best effort: the original error is the one to report
            pass
