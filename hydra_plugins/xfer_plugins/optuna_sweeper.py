"""hydra-optuna-sweeper's sweeper, resumable with ``sweep.resume=<sweep id>`` (xfer.sweep).

The study continues from its storage as it always does (same ``study_name`` and ``storage``).
Resuming a sweep also makes the numbers add up: trials the interrupted sweep left RUNNING (its
process died) are marked FAIL and their parameters queued to run first, and only the trials the
sweep still owes are run (``n_trials`` minus the jobs that already finished under the sweep's
parent run), so finished trials are never run again. The sampler's seed is moved on by the
number of trials already stored, so a seeded sampler does not propose the same points again.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import List

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: List[str]) -> None:
        impl = self.sweeper
        if OmegaConf.select(impl.config, "sweep.resume"):
            impl.n_trials = max(0, impl.n_trials - _reopen_study(impl))
        return impl.sweep(arguments)


def _reopen_study(impl) -> int:
    """Settle the trials the interrupted sweep left RUNNING: one whose job finished (its child run's
    overrides hold the trial's parameters) is told COMPLETE with that run's objective, the others
    FAIL, their parameters queued to run first. Returns how many of the sweep's jobs finished."""
    import optuna

    from xfer.sweep import ENV_PARENT, finished_jobs, sweep_children
    from xfer.tracking import make_tracker

    try:
        study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
    except KeyError:  # nothing stored yet: the sweep starts it
        return 0
    tracker = make_tracker(OmegaConf.to_container(impl.config.tracking, resolve=True), probe=False)
    parent = os.environ.get(ENV_PARENT)  # none without tracking: nothing is known finished
    children = sweep_children(tracker, parent) if parent else []
    done = [r for r in children if r["status"] == "FINISHED" and "objective" in r["metrics"]]
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        wanted = {f"{k}={v}" for k, v in trial.params.items()}
        run = next((r for r in done if wanted <= set(r["tags"].get("xfer.overrides", "").split())), None)
        if run is not None:
            study.tell(trial.number, values=[run["metrics"]["objective"]])
            log.info("optuna: trial %d finished in run %s before the interruption", trial.number, run["run_id"])
        else:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
            log.info("optuna: trial %d was interrupted; its parameters run again", trial.number)
    sampler = OmegaConf.select(impl.config, "hydra.sweeper.sampler")
    if sampler is not None and sampler.get("seed") is not None and not isinstance(impl.sampler, functools.partial):
        from hydra.utils import instantiate

        impl.sampler = instantiate(OmegaConf.merge(sampler, {"seed": int(sampler.seed) + len(study.trials)}))
    n = finished_jobs(children, str(impl.config.get("task", "train")))
    log.info("optuna: %d of %d trials of this sweep finished; running the other %d", n, impl.n_trials,
             max(0, impl.n_trials - n))
    return n
