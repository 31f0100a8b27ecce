"""Options and error handling shared by the click commands. Nothing heavy is imported here."""

from __future__ import annotations

import functools

import click


def config_option(func):
    return click.option("-c", "--config", "config", required=True, metavar="PATH", envvar="COPICK_CONFIG",
                        show_envvar=True, help="copick project config (filesystem or CZ cryoET Data Portal).")(func)


def runs_option(func):
    return click.option("-r", "--run-names", "--runs", "run_names", multiple=True, metavar="RUN",
                        help="Runs to process; repeat or comma-separate. Default: all runs.")(func)


def split_names(values) -> list[str]:
    """Flatten repeated and comma-separated option values."""
    return [part.strip() for value in values or () for part in str(value).split(",") if part.strip()]


def parse_shape(text: str) -> tuple[int, int, int]:
    """'Z,Y,X' -> (Z, Y, X); 'full' is the CZII 184,630,630."""
    from copick_soup.objects import FULL_SHAPE

    if text.strip().lower() == "full":
        return FULL_SHAPE
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise click.BadParameter(f"expected Z,Y,X (three integers) or 'full', got '{text}'", param_hint="--shape")
    return shape


def reports_errors(func):
    """Turn the package's `SoupError` into click's one-line 'Error: ...' and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from copick_soup.errors import SoupError

        try:
            return func(*args, **kwargs)
        except SoupError as err:
            raise click.ClickException(str(err)) from err

    return wrapper
