"""xfer's default sweep launcher: Hydra's joblib launcher, each job in a process of its own.

(A Hydra plugin lives in the ``hydra_plugins`` namespace package; this one ships with xfer.)

Hydra's joblib launcher runs jobs inside loky's worker processes. When one of them dies (killed,
out of memory) loky's pool breaks and the whole sweep aborts with ``TerminatedWorkerError``,
taking the jobs running beside it down too. Here a loky worker only supervises: it starts the job
in a fresh Python process (``python -m hydra_plugins.xfer_plugins.process_launcher <dir>``, the
job's arguments pickled into ``dir``) and waits for it. A job whose process dies is one failed job: its run ends KILLED with
the signal named (``xfer.error``) and the other jobs go on. A job's process also ends (SIGTERM)
when its supervisor does, e.g. when the sweep itself is stopped.

Everything else is the joblib launcher's (``hydra.launcher.n_jobs`` and the other joblib options).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed
from joblib.externals import cloudpickle
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class JobKilled(RuntimeError):
    """A job's process ended without returning (a signal, or an interpreter crash)."""


class ProcessJoblibLauncher(JoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        joblib_cfg = dict(self.joblib)
        joblib_cfg["backend"] = "loky"  # as in Hydra's launcher: threads do not work with Hydra
        _core.process_joblib_cfg(joblib_cfg)
        log.info("Joblib.Parallel(%s) is launching %d jobs, each in its own process",
                 ",".join(f"{k}={v}" for k, v in joblib_cfg.items()), len(job_overrides))
        log.info("Launching jobs, sweep output dir : %s", self.config.hydra.sweep.dir)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        tracking = OmegaConf.to_container(self.config.tracking, resolve=True) if "tracking" in self.config else None
        payloads = [cloudpickle.dumps((initial_job_idx + idx, list(overrides), self.hydra_context, self.config,
                                       self.task_function, state)) for idx, overrides in enumerate(job_overrides)]
        return Parallel(**joblib_cfg)(
            delayed(supervise)(initial_job_idx + idx, list(overrides), payload, tracking)
            for idx, (overrides, payload) in enumerate(zip(job_overrides, payloads)))


def supervise(idx: int, overrides: list[str], payload: bytes, tracking: dict | None) -> JobReturn:
    """Runs in a loky worker: the job in a child process; its JobReturn, or a FAILED one naming
    how the process ended."""
    with tempfile.TemporaryDirectory(prefix=f"xfer-job{idx}-") as tmp:
        (Path(tmp) / "job.pkl").write_bytes(payload)
        proc = subprocess.Popen([sys.executable, "-m", __name__, tmp], preexec_fn=_end_with_parent)
        code = proc.wait()
        result = Path(tmp) / "return.pkl"
        if result.exists():
            return cloudpickle.loads(result.read_bytes())
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    reason = f"job {idx}: its process (pid {proc.pid}) ended by {how} before it finished"
    log.error(reason)
    if tracking is not None:
        _close_killed_runs(tracking, idx, reason)
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret._return_value = JobKilled(reason)
    return ret


def _close_killed_runs(tracking: dict, idx: int, reason: str) -> None:
    """The dead job's open runs in the sweep end KILLED with the reason (the sweep's end would
    close them too, without knowing the signal)."""
    from xfer.sweep import ENV_PARENT, UNFINISHED, sweep_children
    from xfer.tracking import make_tracker

    parent = os.environ.get(ENV_PARENT)
    if not parent or not tracking.get("enabled", True):
        return
    try:
        tracker = make_tracker(tracking, probe=False)
        for r in sweep_children(tracker, parent, f" and tags.`xfer.job_num` = '{idx}'"):
            if r["status"] in UNFINISHED:
                tracker.kill_run(r["run_id"], reason)
    except Exception as e:  # noqa: BLE001 - the sweep's end closes them anyway
        log.warning("job %d: its runs were not closed here (%s)", idx, e)


def job_pid(num: int) -> int | None:
    """The process id of the running job ``num`` of a sweep on this machine (its command names
    its directory ``xfer-job<num>-...``), None if there is none."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(__name__.encode() in c for c in cmd) and any(f"xfer-job{num}-".encode() in c for c in cmd):
            return int(proc.name)
    return None


def _end_with_parent() -> None:
    """In the job's process before it starts: SIGTERM when the supervising process dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_job(directory: str) -> None:
    """The job's process: execute the pickled job, write its JobReturn (renamed into place, so
    a half-written result is never read)."""
    d = Path(directory)
    idx, overrides, hydra_context, config, task_function, state = cloudpickle.loads((d / "job.pkl").read_bytes())
    from xfer.errors import Terminated

    try:
        ret = _core.execute_job(idx, overrides, hydra_context, config, task_function, state)
    except Terminated as e:  # its run already ended KILLED with the reason
        print(f"job {idx}: {e}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    try:
        data = cloudpickle.dumps(ret)
    except Exception:  # noqa: BLE001 - an unpicklable error object: keep its text
        ret._return_value = RuntimeError(f"{type(ret._return_value).__name__}: {ret._return_value}")
        data = cloudpickle.dumps(ret)
    (d / "return.tmp").write_bytes(data)
    (d / "return.tmp").rename(d / "return.pkl")


if __name__ == "__main__":
    _run_job(sys.argv[1])
