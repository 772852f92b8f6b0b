"""Hydra multirun support: one MLflow parent run per sweep, every job a child run.

``SweepCallback`` runs in the launching process. Before any job starts it creates the
MLflow experiment (running the sqlite schema migration once, not in racing workers) and
a parent run, and passes the parent's id to the jobs through the environment, which the
joblib launcher's worker processes inherit. When the sweep ends it records how many
children finished and failed on the parent run.
"""
from __future__ import annotations

import atexit
import logging
import os
import time
import uuid
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

ENV_PARENT = "XFER_SWEEP_PARENT_RUN"
ENV_SWEEP = "XFER_SWEEP_ID"


class SweepCallback(Callback):
    """Parent run per sweep; a job that fails before or during its run leaves a FAILED child
    run with the error, and the parent ends FAILED when any job failed (also when Hydra aborts
    the sweep on a failed job: an exit hook closes it)."""

    def __init__(self) -> None:
        self.tracker = None
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .config import register_configs
        from .tracking import make_tracker

        register_configs()
        from .schema import section

        tracking = section("tracking", OmegaConf.to_container(config.tracking, resolve=True))
        if not tracking["enabled"]:
            if _on_ray(config):
                init_ray(config, {})
            return
        self.tracker = make_tracker(tracking)
        sweep_id = uuid.uuid4().hex[:12]
        overrides = " ".join(config.hydra.overrides.task)
        self.tracker.start(f"sweep-{sweep_id}", {"xfer.task": "sweep", "xfer.sweep_id": sweep_id,
                                                  "xfer.sweep_overrides": overrides[:5000]})
        os.environ[ENV_PARENT] = self.tracker.run_id
        os.environ[ENV_SWEEP] = sweep_id
        if _on_ray(config):
            init_ray(config, {ENV_PARENT: self.tracker.run_id, ENV_SWEEP: sweep_id})
        self.started = time.perf_counter()
        atexit.register(self._finish)
        log.info("sweep %s: MLflow parent run %s", sweep_id, self.tracker.run_id)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Runs in the job's process: a failed job gets a FAILED child run naming the error."""
        from hydra.core.utils import JobStatus

        parent = os.environ.get(ENV_PARENT)
        if not parent or job_return.status != JobStatus.FAILED:
            return
        from .tracking import make_tracker

        err = job_return._return_value
        tracker = make_tracker(OmegaConf.to_container(config.tracking, resolve=True))
        tracker.default_parent, tracker.default_tags = sweep_context()
        tracker.start(f"job-{config.hydra.job.num}-failed",
                      {"xfer.error": " ".join(f"{type(err).__name__}: {err}".split())[:5000]})
        tracker.end("FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = os.environ.get(ENV_SWEEP)
        sweeper = OmegaConf.select(config, "hydra.sweeper") or {}
        if self.tracker is not None and "optuna" in str(sweeper.get("_target_", "")).lower():
            self._tag_optuna_best(sweep_id, OmegaConf.to_container(sweeper, resolve=True))
        self._finish()
        if sweep_id and config.get("register") and config.register.get("name"):
            from .errors import XferError
            from .registry import register_from_config

            try:  # the best job of the whole sweep
                register_from_config(OmegaConf.to_container(config.register, resolve=True),
                                     OmegaConf.to_container(config.tracking, resolve=True),
                                     task=str(config.get("task", "train")), sweep_id=sweep_id)
            except XferError as e:
                log.error("register: %s", e)

    def _tag_optuna_best(self, sweep_id: str, sweeper: dict) -> None:
        """Tag the trial run with the best objective of this sweep, and record the study's
        best value and parameters (over all its sweeps) on the parent run."""
        runs = [r for r in self.tracker.find_runs(f"tags.`xfer.sweep_id` = '{sweep_id}'")
                if r["status"] == "FINISHED" and "objective" in r["metrics"]]
        if runs:
            best = max(runs, key=lambda r: r["metrics"]["objective"])
            self.tracker.tag_run(best["run_id"], {"xfer.optuna_best": "true"})
            self.tracker.set_tags({"xfer.optuna_best_run": best["run_id"]})
            self.tracker.log_metrics({"best_objective": best["metrics"]["objective"]})
        try:
            import optuna

            study = optuna.load_study(study_name=sweeper["study_name"], storage=sweeper["storage"])
            self.tracker.set_tags({"xfer.optuna_study": sweeper["study_name"],
                                   "xfer.optuna_storage": sweeper["storage"],
                                   "xfer.optuna_best_params": str(study.best_trial.params)[:5000]})
            self.tracker.log_metrics({"study_best_value": study.best_value, "study_trials": len(study.trials)})
        except Exception as e:  # noqa: BLE001 - the sweep's own results are already recorded
            log.warning("optuna study not read back: %s", e)

    def _finish(self) -> None:
        if self.tracker is None:
            return
        children = self.tracker.find_runs(f"tags.`mlflow.parentRunId` = '{self.tracker.run_id}'")
        counts = {"FINISHED": 0, "FAILED": 0, "RUNNING": 0}
        for r in children:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        self.tracker.log_metrics({"jobs_finished": counts["FINISHED"], "jobs_failed": counts["FAILED"],
                                  "jobs_unfinished": counts.get("RUNNING", 0) + counts.get("SCHEDULED", 0),
                                  "wall_seconds": time.perf_counter() - self.started})
        self.tracker.end("FINISHED" if counts["FAILED"] == 0 and counts.get("RUNNING", 0) == 0 else "FAILED")
        self.tracker = None
        for key in (ENV_PARENT, ENV_SWEEP):
            os.environ.pop(key, None)


def _on_ray(config: DictConfig) -> bool:
    return "RayLauncher" in str(OmegaConf.select(config, "hydra.launcher._target_") or "")


def init_ray(config: DictConfig, env: dict[str, str]) -> None:
    """Connect to Ray as the Ray launcher would (``hydra.launcher.ray.init``), adding the sweep's
    environment to the job's runtime_env: Ray workers do not inherit the launching process's
    environment, and the launcher then finds Ray initialised and reuses the connection."""
    import ray

    if ray.is_initialized():
        return
    init = OmegaConf.to_container(OmegaConf.select(config, "hydra.launcher.ray.init") or {}, resolve=True)
    runtime_env = dict(init.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), "MXNET_SUBGRAPH_VERBOSE": "0", **env}
    if not init.get("address"):  # a new local instance: the launcher's own small object store
        init.setdefault("object_store_memory", 78643200)  # (Ray refuses it when joining a cluster)
    ray.init(**init, runtime_env=runtime_env)
    log.info("ray: connected to %s", ray.get_runtime_context().gcs_address)


def sweep_context() -> tuple[str | None, dict[str, str]]:
    """(parent run id, tags) for a job of the current sweep, or (None, {}) outside one."""
    parent = os.environ.get(ENV_PARENT)
    if not parent:
        return None, {}
    tags = {"xfer.sweep_id": os.environ.get(ENV_SWEEP, "")}
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        tags["xfer.overrides"] = " ".join(hc.overrides.task)[:5000]
        tags["xfer.job_num"] = str(hc.job.num)
    except ValueError:  # not inside a Hydra job
        pass
    return parent, tags
