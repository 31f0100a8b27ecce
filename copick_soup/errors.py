"""The one error type users see: a one-line message that names the file, run or option at fault."""


class SoupError(Exception):
    """Bad input or an unusable project. The CLI prints the message on one line and exits non-zero."""
