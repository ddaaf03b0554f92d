"""Errors a user can cause.

Each carries a one-line message that names the file or setting at fault and what to do.
The CLI prints that line and exits non-zero; `--debug` shows the traceback.
"""


class AttnsegError(Exception):
    """Base class of every error a user can cause."""


class ConfigError(AttnsegError, ValueError):
    """A configuration key or command-line value is wrong."""


class DataError(AttnsegError, ValueError):
    """An input file or dataset is missing, malformed or inconsistent."""


class OutputExistsError(AttnsegError, FileExistsError):
    """An output exists and overwriting was not requested."""
