"""Stages reused by fingerprint: a finished MLflow run whose ``xfer.fingerprint`` tag matches
is reused; otherwise the stage runs, under a file lock, so parallel jobs never run the same
stage twice (the second one waits and then reuses the first one's run)."""
from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, TypeVar

from ..tracking import NullTracker, tracking_uri

log = logging.getLogger(__name__)
T = TypeVar("T")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block; other processes wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_dir(tracking: Mapping) -> Path:
    """``tracking.lock_dir``, else ``.xfer-locks`` beside a sqlite store (or in the working directory)."""
    if tracking["lock_dir"]:
        return Path(tracking["lock_dir"])
    uri = tracking_uri(tracking["uri"])
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / ".xfer-locks"
    return Path(".xfer-locks").resolve()


def find_finished(tracker: NullTracker, fp: str, tags: Mapping[str, str]) -> dict | None:
    """The newest FINISHED run with fingerprint ``fp`` and the given tags, or None."""
    cond = "".join(f" and tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = tracker.find_runs(f"tags.`xfer.fingerprint` = '{fp}' and attributes.status = 'FINISHED'{cond}")
    return runs[0] if runs else None


def reuse_or_run(tracker: NullTracker, tracking: Mapping, fp: str, tags: Mapping[str, str], what: str,
                 run: Callable[[], T], reuse: Callable[[dict], T]) -> T:
    """``reuse(found run)`` if a finished run has this fingerprint, else ``run()``; with tracking
    disabled there is nothing to reuse and nothing to lock."""
    if not tracking["enabled"]:
        return run()
    with file_lock(lock_dir(tracking) / f"{what}-{fp[:20]}.lock"):
        found = find_finished(tracker, fp, tags)
        if found:
            log.info("%s: reusing finished run %s (fingerprint %s)", what, found["run_id"], fp[:12])
            return reuse(found)
        log.info("%s: no finished run with fingerprint %s; running it", what, fp[:12])
        return run()
