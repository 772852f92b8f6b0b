"""Jobs: what ``python -m xfer.run`` dispatches to, built from the library modules.

A job is a chain of stages. Each stage is a whole config with a fingerprint; a finished
MLflow run with that fingerprint is reused instead of run again (``stages.reuse_or_run``).
``train`` fits one network (``+experiment=imdb_base``); ``transfer`` obtains its base stage,
then runs the comparison methods (``methods.METHODS``) on the target data. Every job takes a
config (validated here), an output directory and a tracker, so it runs the same under Hydra,
in tests or in a notebook.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..schema import validate
from ..tracking import NullTracker


def run_task(cfg: Mapping[str, Any], out_dir: str | Path, tracker: NullTracker | None = None) -> dict:
    cfg = validate(cfg)
    if cfg["task"] == "transfer":
        from .transfer import transfer_task

        return transfer_task(cfg, out_dir, tracker)
    from .train import train_task

    return train_task(cfg, out_dir, tracker)
