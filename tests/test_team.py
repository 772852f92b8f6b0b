"""The team setup, tested: sweeps against ``mlflow server`` on PostgreSQL with proxied artifacts
(the README's recipe, started by ``xfer.servers`` with the same commands), and the faults on the
way: the server restarted, PostgreSQL restarted, a job killed, then the sweep resumed."""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import PY, TRANSFER_QUICK, cli_env, free_port, kill_mid_training

pytestmark = pytest.mark.e2e

TRAIN = ["+experiment=imdb_base", "model=pool", "data.limit=2500", "trainer.max_epochs=3", "trainer.patience=5",
         "model.encoder.bigram_buckets=20000", "trainer.progress=false", "hydra.launcher.n_jobs=2"]


class Store:
    def __init__(self, pg, server, root: Path):
        self.pg, self.server, self.root = pg, server, root

    def client(self):
        import mlflow

        return mlflow.MlflowClient(self.server.uri)

    def runs(self, experiment: str = "xfer") -> list:
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        return client.search_runs([exp.experiment_id], max_results=5000) if exp else []

    def sweep(self, cwd: Path, *overrides: str, wait: bool = True):
        """``python -m xfer.run -m`` with MLFLOW_TRACKING_URI pointing at the server."""
        cmd = [PY, "-m", "xfer.run", "-m", f"tracking.lock_dir={self.root / 'locks'}", *overrides]
        env = cli_env(MLFLOW_TRACKING_URI=self.server.uri)
        if not wait:
            return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def store():
    from xfer.errors import ConfigError
    from xfer.servers import MlflowServer, PostgresServer, pg_bin

    try:
        pg_bin("initdb")
        import psycopg2  # noqa: F401 - MLflow's and Optuna's PostgreSQL driver
    except (ConfigError, ImportError) as e:
        if os.environ.get("XFER_REQUIRE_POSTGRES"):
            pytest.fail(f"{e} but XFER_REQUIRE_POSTGRES is set (.ci/run installs it)")
        pytest.skip(str(e))
    # PostgreSQL runs as its own user, which cannot enter pytest's private temporary directory
    root = Path(tempfile.mkdtemp(prefix="xfer-team-", dir="/tmp"))
    root.chmod(0o755)
    try:
        pg = PostgresServer(root / "pg", free_port()).init()
        server = MlflowServer(pg.uri(), root / "artifacts", free_port(), log=root / "mlflow.log")
        server.start()
        yield Store(pg, server, root)
        server.stop()
        pg.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _sweep_children(store, sweep_id=None):
    runs = store.runs()
    parents = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"
               and (sweep_id is None or r.data.tags["xfer.sweep_id"] == sweep_id)]
    parent = max(parents, key=lambda r: r.info.start_time)
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def _every_epoch_once(store, runs, epochs=3):
    client = store.client()
    for r in runs:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_roc_auc"))
        assert steps == list(range(epochs)), (r.data.tags.get("xfer.job_num"), steps)
        assert {"test_roc_auc", "test_accuracy", "train_seconds"} <= set(r.data.metrics)


def test_transfer_sweep_lands_on_the_server(store, tmp_path, monkeypatch):
    proc = store.sweep(tmp_path, *TRANSFER_QUICK, "base.data.limit=300", "transfer.repeats=1", "trainer.max_epochs=1",
                       "transfer.methods=[transfer,tfidf_lr]", "transfer.tsne.enabled=false", "schedule=frozen,gradual",
                       "hydra.launcher.n_jobs=2", "tracking.experiment=team-transfer")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    runs = store.runs("team-transfer")
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 2
    assert len([r for r in runs if r.data.tags.get("xfer.task") == "train"]) == 1  # base trained once (locked)
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            and r.data.tags.get("xfer.task") == "transfer"]
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    methods = [r for r in runs if r.data.tags.get("xfer.method", "").startswith("transfer_")]
    assert sorted(r.data.tags["xfer.method"] for r in methods) == ["transfer_frozen", "transfer_gradual"]
    assert all(0 <= r.data.metrics["test_roc_auc"] <= 1 for r in methods)
    # artifacts went through the server into its artifact store, none into the working directory
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in runs)
    assert not (tmp_path / "mlruns").exists() and any((store.root / "artifacts").rglob("MLmodel"))
    # a transferred network's pyfunc model loads from the server (its base fetched from it too)
    import mlflow
    import pandas as pd

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.server.uri)
    try:
        best = max(methods, key=lambda r: r.data.metrics["test_roc_auc"])
        model = mlflow.pyfunc.load_model(best.data.tags["xfer.model_uri"])
    finally:
        mlflow.set_tracking_uri(before)
    out = model.predict(pd.DataFrame({"Description": ["Clean room, friendly staff.", "Dirty and noisy, never again."],
                                      "Browser_Used": ["Firefox", "Chrome"], "Device_Used": ["Desktop", "Mobile"]}))
    assert len(out) == 2


def test_optuna_study_stored_in_postgresql(store, tmp_path):
    import optuna

    storage = store.pg.uri("optuna")
    quick = [o.replace("hotel_transfer", "hotel_delhi_transfer") for o in TRANSFER_QUICK]
    cmd = [*quick, "hparams_search=transfer_optuna", "base.data.limit=300", "data.n_train=100", "hydra.sweeper.n_trials=2",
           f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=team", "tracking.experiment=team-optuna"]
    proc = store.sweep(tmp_path, *cmd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    study = optuna.load_study(study_name="team", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    runs = store.runs("team-optuna")
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    assert parent.data.tags["xfer.optuna_storage"] == storage
    assert parent.data.metrics["study_best_value"] == pytest.approx(study.best_value)


@pytest.mark.parametrize("what", ["mlflow server", "postgresql"])
def test_a_sweep_rides_out_a_restart(store, tmp_path, what):
    stop, start = ((store.server.stop, store.server.start) if what == "mlflow server" else (store.pg.stop, store.pg.start))
    proc = store.sweep(tmp_path, *TRAIN, "seed=0,1,2,3", f"tracking.experiment=restart-{what.split()[0]}", wait=False)
    kill_mid_training(proc, tmp_path, 0, signal=None)  # until job 0 is mid-training
    stop()
    time.sleep(5)
    start()
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-4000:]
    runs = store.runs(f"restart-{what.split()[0]}")
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 4
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    _every_epoch_once(store, children)


def test_a_killed_job_then_resume_on_the_server(store, tmp_path):
    exp = "tracking.experiment=team-resume"
    proc = store.sweep(tmp_path, *TRAIN, "seed=0,1,2", exp, "tracking.log_model=false", wait=False)
    kill_mid_training(proc, tmp_path, 1, client=store.client)
    proc.communicate(timeout=900)
    assert proc.returncode != 0
    runs = store.runs("team-resume")
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    [killed] = [r for r in runs if r.info.status == "KILLED"]
    assert "SIGKILL" in killed.data.tags["xfer.error"]
    again = store.sweep(tmp_path, *TRAIN, "seed=0,1,2", exp, "tracking.log_model=false",
                        f"sweep.resume={parent.data.tags['xfer.sweep_id']}")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    runs = store.runs("team-resume")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 3
    _every_epoch_once(store, children)


def test_the_readme_recipe_is_what_the_fixture_runs(store):
    """The README's team commands are the ones xfer.servers runs (paths and ports aside)."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    recipe = readme[readme.index("**Beyond one machine.**"):]
    recipe = recipe[:recipe.index("What a worker needs")]

    def shape(cmd: list[str]) -> list[str]:  # without the parts that differ by machine
        text = " ".join(c.split("/")[-1] if c.startswith("/") else c for c in cmd if c not in ("runuser", "-u", "--"))
        return [w for w in re.split(r"[\s\"]+", text) if w and not re.search(r"\d{4,5}|xfer-team|^postgres$", w)]

    flat = re.sub(r"\\\n\s*", " ", recipe)
    for cmd in [*store.pg.commands, store.server.command]:
        for word in shape(cmd):
            assert word.strip("'") in flat, (word, cmd)
    assert "sweep.resume=" in readme and "tracking.lock_dir=" in recipe and "hydra.sweeper.storage=postgresql" in recipe
