"""Errors that reach the user as one line (exit code 2 from the CLI)."""


class XferError(Exception):
    """Base class for user-facing errors: bad data, bad config, bad bundle.

    The message must fit one line and name the file/field and the problem.
    """

    def __str__(self) -> str:  # keep it on one line whatever the caller passed
        return " ".join(super().__str__().split())


class DataError(XferError):
    """Input data cannot be used (missing file/column, bad bytes, unknown label...)."""


class ConfigError(XferError):
    """A configuration value is invalid."""


class BundleError(XferError):
    """A saved model bundle is missing, corrupt or does not match."""


def cli_main(main):
    """Decorator for a ``main(argv) -> int`` command: an XferError becomes ``error: <message>``
    on stderr and exit code 2, never a traceback."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except XferError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper
