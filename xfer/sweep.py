"""Hydra multirun support: one MLflow parent run per sweep, every job a child run.

``SweepCallback`` runs in the launching process. Before any job starts it creates the
MLflow experiment (running the sqlite schema migration once, not in racing workers) and
a parent run, and passes the parent's id to the jobs through the environment, which the
joblib launcher's worker processes inherit. When the sweep ends it closes the runs of jobs
whose process died (KILLED, with the reason) and records how many jobs finished and failed
on the parent run.

A sweep is resumable (``sweep.resume=<sweep id>``): the parent run is reopened and every job
first looks for its own earlier runs under it (``resume_point``), found by its job fingerprint
(the job's whole validated config, tag ``xfer.job_fingerprint``): a FINISHED one means the job
is skipped, an interrupted training run with a complete checkpoint is continued, anything
else runs again.
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
ENV_RESUME = "XFER_SWEEP_RESUME"
#: job-level settings that do not change what a job computes (left out of its fingerprint)
RUNTIME_KEYS = ("sweep", "resume", "tracking", "register")
UNFINISHED = ("RUNNING", "SCHEDULED")


class SweepCallback(Callback):
    """Parent run per sweep; a job that fails before or during its run leaves a FAILED child
    run with the error, and the parent ends FAILED when any job failed (also when Hydra aborts
    the sweep on a failed job: an exit hook closes it)."""

    def __init__(self) -> None:
        self.tracker = None
        self.started = 0.0
        self.task = "train"

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
        self.task = str(config.get("task", "train"))
        resume = OmegaConf.select(config, "sweep.resume")
        env = {}
        if resume:
            sweep_id = str(resume)
            self.tracker.resume(find_sweep(self.tracker, sweep_id), finished_ok=True)
            self.tracker.set_tags({"xfer.sweep_resumed": str(int(self.tracker.get_tags(self.tracker.run_id).get(
                "xfer.sweep_resumed", "0")) + 1)})
            env[ENV_RESUME] = "1"
        else:
            sweep_id = uuid.uuid4().hex[:12]
            overrides = " ".join(job_overrides(config.hydra.overrides.task))
            self.tracker.start(f"sweep-{sweep_id}", {"xfer.task": "sweep", "xfer.sweep_id": sweep_id,
                                                      "xfer.sweep_overrides": overrides[:5000]})
        env.update({ENV_PARENT: self.tracker.run_id, ENV_SWEEP: sweep_id})
        os.environ.update(env)
        if _on_ray(config):
            init_ray(config, env)
        self.started = time.perf_counter()
        atexit.register(self._finish)
        log.info("sweep %s: MLflow parent run %s%s (if interrupted, run the same command with sweep.resume=%s)",
                 sweep_id, self.tracker.run_id, " (resumed)" if resume else "", sweep_id)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Runs in the job's process: a failed job gets a FAILED child run naming the error."""
        from hydra.core.utils import JobStatus

        parent = os.environ.get(ENV_PARENT)
        if not parent or job_return.status != JobStatus.FAILED:
            return
        from .tracking import make_tracker

        err = job_return._return_value
        tracker = make_tracker(OmegaConf.to_container(config.tracking, resolve=True), probe=False)
        tracker.default_parent, tracker.default_tags = sweep_context()
        tracker.start(f"job-{config.hydra.job.num}-failed",
                      {"xfer.task": str(config.get("task", "train")),
                       "xfer.error": " ".join(f"{type(err).__name__}: {err}".split())[:5000]})
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
        tracker, self.tracker = self.tracker, None
        try:
            counts = close_sweep(tracker, self.task)
            tracker.log_metrics({**counts, "wall_seconds": time.perf_counter() - self.started})
            tracker.end("FINISHED" if counts["jobs_failed"] == 0 and counts["jobs_unfinished"] == 0 else "FAILED")
        finally:
            for key in (ENV_PARENT, ENV_SWEEP, ENV_RESUME):
                os.environ.pop(key, None)


def close_sweep(tracker, task: str) -> dict[str, int]:
    """After every job returned: a child run still RUNNING belongs to a job whose process died
    without closing it (SIGKILL, out of memory, a lost machine): it ends KILLED, with the reason
    in ``xfer.error``. Then the jobs are counted, each once (``_jobs``), by its best run:
    finished / failed (no run finished) / unfinished; runs a resumed job replaced are
    ``runs_superseded``."""
    children = sweep_children(tracker, tracker.run_id)
    for r in children:
        if r["status"] in UNFINISHED:
            tracker.kill_run(r["run_id"], "the job's process ended without closing its run "
                                          "(killed, out of memory or a lost machine)")
            r["status"] = "KILLED"
    jobs = _jobs(children, task)
    finished = sum("FINISHED" in s for s in jobs.values())
    failed = sum("FINISHED" not in s and bool({"FAILED", "KILLED"} & set(s)) for s in jobs.values())
    return {"jobs_finished": finished, "jobs_failed": failed, "jobs_unfinished": len(jobs) - finished - failed,
            "runs_superseded": sum(len(s) for s in jobs.values()) - len(jobs)}


def _jobs(children: list[dict], task: str) -> dict[str, list[str]]:
    """The sweep's child runs grouped by job -> their statuses. A job is its fingerprint (the
    same job in a resumed sweep, whatever its number); a job that failed before it had one (bad
    config) is its number. Base stages trained on the way are not jobs."""
    jobs: dict[str, list[str]] = {}
    for r in children:
        tags = r["tags"]
        if tags.get("xfer.task", task) == task:
            key = tags.get("xfer.job_fingerprint") or f"job {tags.get('xfer.job_num', r['run_id'])}"
            jobs.setdefault(key, []).append(r["status"])
    return jobs


def finished_jobs(children: list[dict], task: str) -> int:
    """How many jobs of a sweep (its ``sweep_children``) finished."""
    return sum("FINISHED" in s for s in _jobs(children, task).values())


def sweep_children(tracker, parent: str, where: str = "") -> list[dict]:
    """The child runs of sweep parent run ``parent`` (``where``: more conditions, ``and ...``), newest first."""
    return tracker.find_runs(f"tags.`mlflow.parentRunId` = '{parent}'{where}")


def job_overrides(overrides) -> list[str]:
    """A job's Hydra overrides without the sweep-level switches (``sweep.resume``)."""
    return [o for o in overrides if not o.lstrip("+~").startswith("sweep.")]


def job_fingerprint(cfg: dict) -> str:
    """What a job computes: its validated config without the runtime settings (tracking,
    registry, resume switches)."""
    from .bundle import fingerprint

    return fingerprint({k: v for k, v in cfg.items() if k not in RUNTIME_KEYS})


def find_sweep(tracker, sweep_id: str) -> str:
    """The parent run of sweep ``sweep_id`` (a ConfigError if the store has none)."""
    from .errors import ConfigError

    runs = tracker.find_runs(f"tags.`xfer.sweep_id` = '{sweep_id}' and tags.`xfer.task` = 'sweep'")
    if not runs:
        raise ConfigError(f"sweep.resume: no sweep {sweep_id!r} in {tracker.location.split(' run_id=')[0]}")
    return runs[0]["run_id"]


def resume_point(cfg: dict, tracker) -> dict | None:
    """In a resumed sweep, what this job does with its earlier runs under the parent (matched
    by job fingerprint and task): ``{"skip": run}`` if one FINISHED; ``{"resume": run id}`` for an
    interrupted training run with a complete checkpoint; None (run it) otherwise. Earlier runs
    it leaves behind that are still open end KILLED."""
    parent = tracker.default_parent
    if not (parent and os.environ.get(ENV_RESUME)):
        return None
    fp = tracker.default_tags["xfer.job_fingerprint"]  # set by the job (xfer.run.execute)
    runs = sweep_children(tracker, parent, f" and tags.`xfer.task` = '{cfg['task']}' and "
                                           f"tags.`xfer.job_fingerprint` = '{fp}'")
    done = [r for r in runs if r["status"] == "FINISHED"]
    if done:
        log.info("sweep resume: job already finished in run %s; skipped", done[0]["run_id"])
        return {"skip": done[0]}
    for r in runs:  # newest first
        if cfg["task"] == "train" and tracker.has_checkpoint(r["run_id"]):
            log.info("sweep resume: continuing run %s from its checkpoint", r["run_id"])
            return {"resume": r["run_id"]}
    for r in runs:
        if r["status"] in UNFINISHED:
            tracker.kill_run(r["run_id"], "interrupted; the resumed sweep ran the job again")
    return None


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
        tags["xfer.overrides"] = " ".join(job_overrides(hc.overrides.task))[:5000]
        tags["xfer.job_num"] = str(hc.job.num)
    except ValueError:  # not inside a Hydra job
        pass
    return parent, tags
