"""Faults in a sweep: a job killed mid-training fails alone, then ``sweep.resume=<id>`` finishes
the sweep under the same parent run (finished jobs skipped, the killed one continued from its
checkpoint)."""
import os
import signal
import time
from pathlib import Path

import pytest

from helpers import list_runs, run_cli

pytestmark = pytest.mark.e2e

JOB = ["+experiment=imdb_base", "model=pool", "data.limit=2500", "trainer.max_epochs=3", "trainer.patience=5",
       "model.encoder.bigram_buckets=20000", "trainer.progress=false", "tracking.log_model=false",
       "hydra.launcher.n_jobs=2", "seed=0,1,2"]


def job_pid(num: int) -> int | None:
    """The process running job ``num`` of a sweep on xfer's launcher (its command names its
    directory ``xfer-job<num>-...``)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"process_launcher" in c for c in cmd) and any(f"xfer-job{num}-".encode() in c for c in cmd):
            return int(proc.name)
    return None


def kill_mid_training(proc, sweep_dir: Path, num: int, sig=signal.SIGKILL) -> None:
    """Wait until job ``num`` saved its first checkpoint, then kill its process with ``sig``."""
    deadline = time.time() + 300
    while not list(sweep_dir.glob(f"multirun/*/*/{num}/checkpoint/state.json")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # into its second epoch
    pid = job_pid(num)
    assert pid is not None
    os.kill(pid, sig)


def _children(tmp_path):
    runs = list_runs(tmp_path)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_a_killed_job_fails_alone_then_the_sweep_resumes_under_the_same_parent(tmp_path):
    proc = run_cli(tmp_path, *JOB, multirun=True, wait=False)
    kill_mid_training(proc, tmp_path, 1)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0
    assert "job 1: its process" in out and "SIGKILL" in out
    parent, children = _children(tmp_path)
    by_job = {r.data.tags["xfer.job_num"]: r for r in children}
    assert len(children) == 3 and by_job["0"].info.status == by_job["2"].info.status == "FINISHED"
    killed = by_job["1"]
    assert killed.info.status == "KILLED" and "SIGKILL" in killed.data.tags["xfer.error"]
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["jobs_finished"] == 2 and parent.data.metrics["jobs_failed"] == 1
    sweep_id = parent.data.tags["xfer.sweep_id"]
    assert f"sweep.resume={sweep_id}" in out  # the sweep says how to resume it

    again = run_cli(tmp_path, *JOB, f"sweep.resume={sweep_id}", multirun=True)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert log.count("job already finished in run") == 2
    assert f"continuing run {killed.info.run_id} from its checkpoint" in log
    parent2, children2 = _children(tmp_path)
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert parent2.data.metrics["jobs_finished"] == 3 and parent2.data.metrics["jobs_failed"] == 0
    assert parent2.data.tags["xfer.sweep_resumed"] == "1"
    assert len(children2) == 3 and all(r.info.status == "FINISHED" for r in children2)  # no new runs
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for r in children2:  # every epoch logged once: nothing lost, nothing twice
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_roc_auc")]
        assert sorted(steps) == [0, 1, 2], (r.data.tags["xfer.job_num"], steps)


def test_a_terminated_job_ends_killed_with_the_signal(tmp_path):
    proc = run_cli(tmp_path, *JOB[:-1], "seed=0,1", multirun=True, wait=False)
    kill_mid_training(proc, tmp_path, 0, signal.SIGTERM)
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    _, children = _children(tmp_path)
    by_job = {r.data.tags["xfer.job_num"]: r for r in children}
    assert by_job["0"].info.status == "KILLED" and "terminated by SIGTERM" in by_job["0"].data.tags["xfer.error"]
    assert by_job["1"].info.status == "FINISHED"
