"""The same sweep on a Ray cluster (hydra-ray-launcher): a local Ray head started for the module;
then a sweep killed whole and resumed on it."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import checkpoint_logged, free_port

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
QUICK = ["+experiment=imdb_base", "model=pool", "data.limit=150", "trainer.max_epochs=1",
         "model.encoder.bigram_buckets=1000", "trainer.progress=false", "tracking.log_model=false"]


@pytest.fixture(scope="module")
def ray_head():
    """(launcher overrides, environment) of a local Ray head with 2 CPUs."""
    ray = str(BIN / "ray") if (BIN / "ray").exists() else shutil.which("ray")
    # RAY_DEDUP_LOGS=0: the driver prints every worker's log line (Ray folds repeated ones by default)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    start = subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "2",
                            "--include-dashboard", "false", "--object-store-memory", "100000000",
                            "--temp-dir", ray_tmp], env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        yield ["hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}"], env
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _runs(db: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_sweep_runs_on_a_local_ray_cluster(tmp_path, ray_head):
    launcher, env = ray_head
    db = tmp_path / "mlflow.db"
    cmd = [sys.executable, "-m", "xfer.run", "-m", *launcher, f"tracking.uri=sqlite:///{db}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}", *QUICK, "seed=0,1,2"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Ray Launcher is launching 3 jobs" in proc.stdout + proc.stderr
    runs = _runs(db)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" and 0 <= r.data.metrics["test_roc_auc"] <= 1 for r in children)
    assert {r.data.params["seed"] for r in children} == {"0", "1", "2"}
    assert {r.data.tags["xfer.sweep_id"] for r in children} == {parent.data.tags["xfer.sweep_id"]}
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir()) == ["0", "1", "2"]
    # resuming the finished sweep on Ray: every job finds its finished run and is skipped
    cmd = [c.replace(str(tmp_path / "multirun"), str(tmp_path / "again")) for c in cmd]
    again = subprocess.run([*cmd, f"sweep.resume={parent.data.tags['xfer.sweep_id']}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    runs = _runs(db)
    assert len(runs) == 4  # no new run: every job found its finished run and was skipped
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 3


def test_a_sweep_killed_whole_resumes_on_ray(tmp_path, ray_head):
    """The launching process and everything it started die mid-training (a reboot of the machine
    that drove the sweep); the resumed sweep continues the interrupted job from its checkpoint."""
    import mlflow

    launcher, env = ray_head
    db = tmp_path / "mlflow.db"
    cmd = [sys.executable, "-m", "xfer.run", "-m", *launcher, f"tracking.uri=sqlite:///{db}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}", *QUICK, "data.limit=2500", "trainer.max_epochs=3",
           "trainer.patience=5", "model.encoder.bigram_buckets=20000", "seed=0,1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (list(tmp_path.glob("multirun/*/checkpoint/state.json"))  # (the store exists by then)
               and checkpoint_logged(mlflow.MlflowClient(f"sqlite:///{db}"))):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(5)  # Ray ends the dead driver's tasks
    before = _runs(db)
    [parent] = [r for r in before if r.data.tags.get("xfer.task") == "sweep"]
    interrupted = {r.info.run_id for r in before if r.info.status == "RUNNING" and r.info.run_id != parent.info.run_id}
    again = subprocess.run([*cmd, f"sweep.resume={parent.data.tags['xfer.sweep_id']}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    runs = _runs(db)
    # the job that had a checkpoint went on in its own run, which is now finished
    assert any(r.info.run_id in interrupted and r.info.status == "FINISHED" for r in runs)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 2
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    for r in children:
        if r.info.status == "FINISHED":
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_roc_auc"))
            assert steps == [0, 1, 2], steps
        else:  # an interrupted run the resumed sweep could not continue (no checkpoint yet) and replaced
            assert r.info.status == "KILLED"
