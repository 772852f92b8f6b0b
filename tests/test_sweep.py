"""Hydra multiruns on the joblib launcher: one MLflow parent per sweep, every job a child."""
import pytest

from helpers import TRANSFER_QUICK, list_runs, run_cli

pytestmark = pytest.mark.e2e

JOB = ["+experiment=imdb_base", "model=pool", "trainer.max_epochs=1", "model.encoder.bigram_buckets=1000",
       "trainer.progress=false", "hydra.launcher.n_jobs=2"]


def _sweep(tmp_path, *overrides):
    return run_cli(tmp_path, *JOB, *overrides, multirun=True)


_runs = list_runs


def test_four_jobs_on_two_workers_are_children_of_one_parent(tmp_path):
    proc = _sweep(tmp_path, "data.limit=150", "seed=0,1,2,3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in proc.stdout + proc.stderr
    runs = _runs(tmp_path)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 4
    assert all(r.info.status == "FINISHED" and "test_roc_auc" in r.data.metrics for r in children)
    assert {r.data.tags["xfer.job_num"] for r in children} == {"0", "1", "2", "3"}
    assert {r.data.tags["xfer.sweep_id"] for r in children} == {parent.data.tags["xfer.sweep_id"]}
    assert {r.data.params["seed"] for r in children} == {"0", "1", "2", "3"}
    assert len({r.info.run_id for r in children}) == 4
    assert sorted(p.name for p in tmp_path.glob("multirun/*/*/*") if p.is_dir()) == ["0", "1", "2", "3"]


def test_a_failing_job_does_not_stop_the_others_and_fails_the_parent(tmp_path):
    proc = _sweep(tmp_path, "data.limit=150,-5,100")
    assert proc.returncode != 0
    assert "error: data.limit: -5 is not an integer >= 1" in proc.stderr
    runs = _runs(tmp_path)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["jobs_finished"] == 2 and parent.data.metrics["jobs_failed"] == 1
    [failed] = [r for r in runs if r.info.status == "FAILED" and r.info.run_id != parent.info.run_id]
    assert failed.data.tags["xfer.job_num"] == "1" and "data.limit" in failed.data.tags["xfer.error"]


def test_parallel_transfer_jobs_train_the_base_once(tmp_path):
    proc = run_cli(tmp_path, *TRANSFER_QUICK, "base.data.limit=300", "transfer.repeats=1", "trainer.max_epochs=1",
                   "transfer.methods=[transfer]", "transfer.tsne.enabled=false", "schedule=frozen,gradual,full",
                   "hydra.launcher.n_jobs=2", "register.name=hotel-test", multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(tmp_path)
    bases = [r for r in runs if r.data.tags.get("xfer.task") == "train"]
    assert len(bases) == 1  # two workers started at once; the second waited for the lock and reused it
    methods = sorted(r.data.tags["xfer.method"] for r in runs if r.data.tags.get("xfer.method", "").startswith("transfer_"))
    assert methods == ["transfer_frozen", "transfer_full", "transfer_gradual"]
    assert all(r.info.status == "FINISHED" for r in runs)
    # register.name: at the end of the sweep its best transfer job (not the IMDB base) is registered
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mv = client.get_model_version_by_alias("hotel-test", "champion")
    transfers = [r for r in runs if r.data.tags.get("xfer.method", "").startswith("transfer_")]
    best = max(transfers, key=lambda r: r.data.metrics["test_roc_auc"])
    assert mv.run_id == best.info.run_id and len(client.search_model_versions("name='hotel-test'")) == 1


def test_learning_curve_sweep_and_report(tmp_path):
    from xfer.report import main as report_main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    quick = [o.replace("hotel_transfer", "learning_curve") for o in TRANSFER_QUICK]
    proc = run_cli(tmp_path, *quick, "base.data.limit=300", "trainer.max_epochs=1", "heads.catboost.iterations=20",
                   "data.n_train=50,100", "schedule=frozen,gradual", "seed=0", multirun=True)  # narrows the sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(tmp_path)
    # the controls do not depend on the schedule: computed once per n_train, reused by the other job
    controls = [r for r in runs if r.data.tags.get("xfer.method") in ("scratch", "catboost_embeddings", "tfidf_lr")]
    assert len(controls) == 2 * 3
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    assert parent.data.metrics["jobs_finished"] == 4
    out = tmp_path / "lc"
    sweep = parent.data.tags["xfer.sweep_id"]
    assert report_main(["--tracking-uri", uri, "--filter", f"tags.`xfer.sweep_id` = '{sweep}'", "--out", str(out),
                        "--parent", parent.info.run_id]) == 0
    md = out.with_suffix(".md").read_text()
    for method in ("transfer_frozen", "transfer_gradual", "scratch", "catboost_embeddings", "tfidf_lr"):
        assert f"| 50 | {method} | 1 |" in md and f"| 100 | {method} | 1 |" in md  # controls counted once


def test_optuna_search_stores_a_study_tags_the_best_trial_and_continues(tmp_path):
    import optuna

    quick = [o.replace("hotel_transfer", "hotel_delhi_transfer") for o in TRANSFER_QUICK]
    # two random trials, then two batches of two that TPE samples from the trials before them
    cmd = [*quick, "hparams_search=transfer_optuna", "base.data.limit=300", "data.n_train=100",
           "hydra.sweeper.sampler.n_startup_trials=2", "hydra.sweeper.n_trials=4"]
    proc = run_cli(tmp_path, *cmd, multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="xfer-transfer-hotel_delhi", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    # the seed fixes the search: the sweeper asks a batch's trials together and tells them in order,
    # so which parallel trial finishes first does not steer it; the same command elsewhere repeats it
    again = tmp_path / "again"
    again.mkdir()
    assert run_cli(again, *cmd, multirun=True).returncode == 0
    repeat = optuna.load_study(study_name="xfer-transfer-hotel_delhi", storage=f"sqlite:///{again / 'optuna.db'}")
    assert [(t.params, t.value) for t in repeat.trials] == [(t.params, t.value) for t in study.trials]
    assert len({t.params["optimizer.lr"] for t in study.trials}) == 4
    assert {"optimizer.lr", "model.embedding.dropout", "model.hidden.dropout", "schedule",
            "transfer.unfreeze_every", "transfer.vocab"} == set(study.best_trial.params)
    runs = _runs(tmp_path)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(jobs) == 4 and all(r.info.status == "FINISHED" for r in jobs)
    # the trials ran the transfer only (the search config fixes transfer.methods), objective = val ROC-AUC
    methods = {r.data.tags.get("xfer.method") for r in runs if r.data.tags.get("xfer.task") == "transfer"}
    assert "scratch" not in methods and "tfidf_lr" not in methods
    assert sorted(round(r.data.metrics["objective"], 6) for r in jobs) == sorted(round(t.value, 6) for t in done)
    [best] = [r for r in jobs if r.data.tags.get("xfer.optuna_best") == "true"]
    assert best.data.metrics["objective"] == pytest.approx(study.best_value)
    assert parent.data.tags["xfer.optuna_best_run"] == best.info.run_id
    assert parent.data.metrics["study_best_value"] == pytest.approx(study.best_value)
    # the same command continues the stored study
    proc = run_cli(tmp_path, *cmd[:-1], "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=1", multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="xfer-transfer-hotel_delhi", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 6
