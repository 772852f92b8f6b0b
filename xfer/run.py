"""Hydra entry point: ``python -m xfer.run +experiment=imdb_base [overrides]``.

Bad input ends the job with one line on stderr (``error: <file/field>: <problem>``)
and exit code 2, before any run or artifact is written.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from .config import register_configs  # noqa: E402
from .errors import XferError, on_termination  # noqa: E402

log = logging.getLogger("xfer")
#: OS errors about the machine, not the code (disk full, read-only file system, no permission):
#: reported like bad input, as one line with exit code 2
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
register_configs()


def execute(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Run the configured task with tracking; raises XferError on bad input."""
    from .jobs import run_task
    from .schema import validate
    from .sweep import job_fingerprint, resume_point, sweep_context
    from .tracking import make_tracker

    plain = validate(OmegaConf.to_container(cfg, resolve=True))  # bad values stop here, before any run
    parent, tags = sweep_context()
    tracker = make_tracker(plain["tracking"], probe=parent is None)  # a sweep's parent made the check
    tracker.default_parent, tracker.default_tags = parent, tags
    if parent:
        tracker.default_tags["xfer.job_fingerprint"] = job_fingerprint(plain)
    point = resume_point(plain, tracker)  # a resumed sweep: this job's earlier runs
    if point and "skip" in point:
        return {"run_id": point["skip"]["run_id"], "objective": point["skip"]["metrics"].get("objective"),
                "metrics": point["skip"]["metrics"], "skipped": True}
    if point:
        plain["resume"] = point["resume"]
    result = run_task(plain, out_dir, tracker)
    if result.get("objective") is not None and tracker.run_id:  # what a sweeper optimises (validation only)
        tracker.log_metrics({"objective": float(result["objective"])})
    if tracker.default_parent is None and result.get("run_id"):  # a sweep registers once, at its end
        from .registry import register_from_config

        registered = register_from_config(plain["register"], plain["tracking"], task=plain["task"],
                                          parent=result["run_id"])
        if registered:
            result["registered"] = str(registered)
    log.info("run: %s", tracker.location)
    log.info("artifacts: %s", getattr(tracker, "artifact_uri", None) or out_dir)
    for key in ("bundle", "model", "comparison"):
        if result.get(key):
            log.info("%s: %s", key, result[key])
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    on_termination()  # SIGTERM/SIGHUP end the run KILLED with the reason, not left RUNNING
    try:
        result = execute(cfg, hc.runtime.output_dir)
    except (XferError, OSError) as e:
        if isinstance(e, OSError) and e.errno not in ENVIRONMENT_ERRNOS:
            raise
        print(f"error: {e}" if isinstance(e, XferError) else f"error: {e.filename or 'output'}: {e.strerror}",
              file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job; the other jobs of the sweep go on
        sys.exit(2)
    return result.get("objective")


if __name__ == "__main__":
    main()
