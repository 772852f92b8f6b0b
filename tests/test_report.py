from xfer.report import main as report_main
from xfer.tracking import MlflowTracker, tracked_run

# mean test ROC-AUC by (method, n_train): transfer leads at 100, ties scratch at 1000
CURVE = {("transfer_gradual", 100): 0.83, ("scratch", 100): 0.70, ("tfidf_lr", 100): 0.76,
         ("transfer_gradual", 1000): 0.84, ("scratch", 1000): 0.85, ("tfidf_lr", 1000): 0.83}


def test_learning_curve_report_from_mlflow_runs(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "xfer")
    with tracked_run(tracker, "sweep", {"xfer.task": "sweep"}):
        pass
    for (method, n), auc in CURVE.items():
        for seed, delta in ((0, -0.01), (1, 0.01)):
            run = tracker.child()
            with tracked_run(run, f"{method}-{n}-{seed}", {"xfer.task": "transfer", "xfer.method": method,
                                                            "xfer.n_train": str(n), "xfer.seed": str(seed)}):
                run.log_metrics({"test_roc_auc": auc + delta, "test_accuracy": 0.7})
    out = tmp_path / "report" / "lc"
    assert report_main(["--tracking-uri", uri, "--out", str(out), "--parent", tracker.run_id]) == 0
    md = (tmp_path / "report" / "lc.md").read_text()
    assert "transfer stops beating scratch at n_train = 1000" in md
    assert "transfer beats tfidf_lr at every measured n_train (100, 1000)" in md
    assert "| 100 | transfer_gradual | 2 | 0.8300 | 0.0141 |" in md
    assert (tmp_path / "report" / "lc.png").stat().st_size > 10_000
    logged = {a.path for a in tracker.client.list_artifacts(tracker.run_id)}
    assert {"lc.png", "lc.md", "lc.json"} <= logged
    capsys.readouterr()
    assert report_main(["--tracking-uri", uri, "--filter", "tags.`xfer.data` = 'nothing'", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no finished transfer runs match" in err


def test_labels_the_control_needs_to_match_transfer_are_read_off_its_curve():
    import pandas as pd
    import pytest

    from xfer.report import labels_to_match

    rows = [("transfer_gradual", 100, 0.80), ("tfidf_lr", 100, 0.70), ("transfer_gradual", 1000, 0.825),
            ("tfidf_lr", 1000, 0.80), ("tfidf_lr", 10000, 0.85), ("transfer_gradual", 10000, 0.95)]
    summary = pd.DataFrame([{"method": m, "n_train": n, "mean": v} for m, n, v in rows])
    got = {r["n_train"]: r for r in labels_to_match(summary)}
    assert got[100]["labels"] == 1000 and got[100]["ratio"] == pytest.approx(10.0)  # TF-IDF's 0.80 is at 1000
    assert got[1000]["labels"] == 3162  # halfway from 0.80 to 0.85, halfway from 1000 to 10000 in log scale
    assert got[10000]["labels"] is None and got[10000]["ratio"] is None  # beyond the measured range


def test_records_keep_the_branch_and_self_training_metrics_a_run_has():
    from xfer.report import runs_to_records

    runs = [{"run_id": "c", "tags": {"xfer.method": "transfer_full_selftrained", "xfer.n_train": "100",
                                     "xfer.seed": "0"},
             "metrics": {"test_roc_auc": 0.92, "pseudo_labelled": 1500.0, "pseudo_positive_share": 0.7}},
            {"run_id": "b", "tags": {"xfer.method": "transfer_gradual", "xfer.n_train": "100", "xfer.seed": "0"},
             "metrics": {"test_roc_auc": 0.9, "test_accuracy": 0.8, "test_encoder_branch_roc_auc": 0.85,
                         "test_ngrams_branch_roc_auc": 0.88, "self_train_unlabelled": 2979.0,
                         "self_train_pseudo_labelled": 1500.0, "self_train_pseudo_label_accuracy": 0.95}},
            {"run_id": "a", "tags": {"xfer.method": "tfidf_lr", "xfer.n_train": "100", "xfer.seed": "0"},
             "metrics": {"test_roc_auc": 0.8}}]
    student, net, control = runs_to_records(runs)
    assert net["test_encoder_branch_roc_auc"] == 0.85 and net["test_ngrams_branch_roc_auc"] == 0.88
    assert "test_encoder_branch_accuracy" not in net and not any("branch" in k for k in control)
    assert (net["self_train_unlabelled"], net["self_train_pseudo_labelled"]) == (2979, 1500)
    assert (student["pseudo_labelled"], student["pseudo_positive_share"]) == (1500, 0.7)
    assert not any("pseudo" in k for k in control)

    from xfer.report import self_training_table

    table = self_training_table([student, net, control]).splitlines()
    assert table[0] == ("| n_train | method | self_train_unlabelled | self_train_pseudo_labelled "
                        "| self_train_pseudo_label_accuracy | pseudo_labelled | pseudo_positive_share |")
    assert len(table) == 4 and "| 100 | transfer_gradual | 2979 | 1500 | 0.9500 |  |  |" in table
    assert self_training_table([control]) == ""
    empty = {**student, "n_train": 3079, "pseudo_labelled": 0.0, "pseudo_positive_share": 0.0}
    assert "| 3079 | transfer_full_selftrained | 0 |  |" in self_training_table([empty]).splitlines()
