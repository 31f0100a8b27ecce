"""Open a copick project (filesystem or CZ cryoET Data Portal config) and choose its runs."""

from __future__ import annotations

import json
from pathlib import Path

from copick_soup.data.retry import is_transport_error, with_retries, within_portal_timeout
from copick_soup.errors import SoupError

PORTAL = "cryoet_data_portal"  # copick's config_type for the CZ cryoET Data Portal backend


def open_project(config_path):
    """Open a copick project from its config file, turning every failure into a one-line `SoupError`."""
    path = Path(config_path)
    if not path.is_file():
        raise SoupError(f"{path}: no such copick config file")
    try:
        portal = json.loads(path.read_text()).get("config_type") == PORTAL
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoupError(f"{path}: not valid JSON ({err})") from err

    import copick  # heavy: imported only when a project is opened
    from pydantic import ValidationError

    try:
        if not portal:
            return copick.from_file(str(path))
        # opening a portal project asks the portal for every run's metadata; its GraphQL client waits without end
        return within_portal_timeout(lambda: copick.from_file(str(path)), str(path))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SoupError(f"{path}: not a valid copick config ({where}: {first['msg']})") from err
    except Exception as err:  # noqa: BLE001 - copick, s3fs and the portal's GraphQL client each raise their own
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if portal and is_transport_error(err):  # copick's backend has already retried
            raise SoupError(f"{path}: cannot reach the CZ cryoET Data Portal ({type(err).__name__}: {reason})") \
                from err
        if isinstance(err, (ValueError, KeyError, TypeError, OSError)):
            raise SoupError(f"{path}: cannot open copick project ({reason})") from err
        raise


def list_names(names, limit: int = 10) -> str:
    """'a, b, c' for error messages, shortened to `limit` names."""
    names = list(names)
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "") if names else "none"


def select_runs(root, run_names=None) -> list:
    """The runs named (in the order given), or all runs when `run_names` is empty. Unknown names are an error."""
    runs = with_retries(lambda: root.runs, f"copick project '{root.config.name}': listing runs")
    if not run_names:
        return list(runs)
    by_name = {run.name: run for run in runs}
    unknown = [name for name in run_names if name not in by_name]
    if unknown:
        raise SoupError(f"unknown run(s) {list_names(unknown)}; the project has {list_names(sorted(by_name))}")
    return [by_name[name] for name in run_names]


def object_names(root) -> list[str]:
    return [obj.name for obj in root.pickable_objects]


def check_object_names(root, names) -> None:
    """Raise if a name is not a pickable object of the project."""
    known = object_names(root)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SoupError(f"unknown object(s) {list_names(unknown)}; the project has {list_names(known)}")


def parse_pairs(pairs, option: str, expected: str) -> dict:
    """['a=b,c=d', 'e=f'] (an option repeated or comma-joined) -> {a: b, c: d, e: f}; anything else is an error
    naming `option` and the `expected` form."""
    mapping = {}
    for pair in (p.strip() for item in pairs or () for p in str(item).split(",") if p.strip()):
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key or not value:
            raise SoupError(f"{option}: expected {expected}, got '{pair}'")
        mapping[key] = value
    return mapping
