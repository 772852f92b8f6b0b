"""Faults in a sweep: a job killed mid-training fails alone, then ``sweep.resume=<id>`` finishes
the sweep under the same parent run (finished jobs skipped, the killed one continued from its
checkpoint)."""
import os
import signal
import time

import pytest

from helpers import kill_mid_training, list_runs, run_cli

pytestmark = pytest.mark.e2e

JOB = ["+experiment=imdb_base", "model=pool", "data.limit=2500", "trainer.max_epochs=3", "trainer.patience=5",
       "model.encoder.bigram_buckets=20000", "trainer.progress=false", "tracking.log_model=false",
       "hydra.launcher.n_jobs=2", "seed=0,1,2"]


def _children(tmp_path):
    runs = list_runs(tmp_path)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def _client(tmp_path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_killed_job_fails_alone_then_the_sweep_resumes_under_the_same_parent(tmp_path):
    proc = run_cli(tmp_path, *JOB, multirun=True, wait=False)
    kill_mid_training(proc, tmp_path, 1, client=lambda: _client(tmp_path))
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
    client = _client(tmp_path)
    for r in children2:  # every epoch logged once: nothing lost, nothing twice
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_roc_auc")]
        assert sorted(steps) == [0, 1, 2], (r.data.tags["xfer.job_num"], steps)


def test_a_terminated_job_ends_killed_with_the_signal(tmp_path):
    proc = run_cli(tmp_path, *JOB[:-1], "seed=0,1", multirun=True, wait=False)
    kill_mid_training(proc, tmp_path, 0, signal=signal.SIGTERM, client=lambda: _client(tmp_path))
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    _, children = _children(tmp_path)
    by_job = {r.data.tags["xfer.job_num"]: r for r in children}
    assert by_job["0"].info.status == "KILLED" and "terminated by SIGTERM" in by_job["0"].data.tags["xfer.error"]
    assert by_job["1"].info.status == "FINISHED"


def test_an_optuna_sweep_killed_whole_resumes_to_its_n_trials(tmp_path):
    """The sweep's whole process group dies (a reboot) after some trials; resuming finishes the
    study at n_trials complete trials, none run twice, all under the first parent run."""
    import subprocess

    import optuna

    from helpers import PY, TRANSFER_QUICK, cli_env

    quick = [o.replace("hotel_transfer", "hotel_delhi_transfer") for o in TRANSFER_QUICK]
    cmd = [PY, "-m", "xfer.run", "-m", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *quick,
           "hparams_search=transfer_optuna", "base.data.limit=300", "data.n_train=100", "hydra.sweeper.n_trials=5"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=cli_env(), start_new_session=True)
    deadline = time.time() + 600

    def finished() -> int:
        if not list(tmp_path.glob("multirun/*/*/0")):  # the sweep's process is still creating the store
            return 0
        return len([r for r in list_runs(tmp_path) if r.data.tags.get("xfer.task") == "transfer"
                    and r.info.status == "FINISHED"])

    while finished() < 2:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name="xfer-transfer-hotel_delhi", storage=storage)
    before = {t.number: t.state for t in study.trials}
    parent, _ = _children(tmp_path)
    again = subprocess.run([*cmd, f"sweep.resume={parent.data.tags['xfer.sweep_id']}"], cwd=tmp_path,
                           capture_output=True, text=True, env=cli_env(), timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="xfer-transfer-hotel_delhi", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5, (before, [t.state for t in study.trials])
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 5  # no point proposed twice
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    parent2, children = _children(tmp_path)
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert parent2.data.metrics["jobs_finished"] == 5
    jobs = [r for r in children if r.data.tags.get("xfer.task") == "transfer" and r.info.status == "FINISHED"]
    assert sorted(round(r.data.metrics["objective"], 9) for r in jobs) == sorted(round(t.value, 9) for t in complete)
