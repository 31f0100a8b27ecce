"""The one error type users see: a one-line message that names the file, run or option at fault."""


class SoupError(Exception):
    """Bad input or an unusable project. The CLI prints the message on one line and exits non-zero."""


class AlreadyPicked(SoupError):
    """A run that already has picks by this user and session: a rerun skips it, and that is not a failure."""
