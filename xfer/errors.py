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


class Terminated(BaseException):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP): raised from the signal
    handler (``on_termination``) so the running MLflow run ends KILLED with the reason instead of
    staying RUNNING. A BaseException, like KeyboardInterrupt: ordinary ``except Exception``
    clean-up does not swallow it."""


def on_termination() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` (only the main thread can set handlers;
    elsewhere this does nothing)."""
    import os
    import signal

    def handler(signum, frame):
        raise Terminated(f"terminated by {signal.Signals(signum).name} (pid {os.getpid()})")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            return


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
