"""The Hydra entry point, run as a user would: in a subprocess, in a fresh directory."""
import subprocess
import sys

import pytest

from helpers import QUICK, cli_env, list_runs, run_cli
from test_schema import BAD, with_experiment

pytestmark = pytest.mark.e2e


def test_imdb_base_smoke(tmp_path):
    proc = run_cli(tmp_path, *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run_id=" in proc.stderr + proc.stdout and "model: models:/" in proc.stderr + proc.stdout
    # a quiet console: none of the notices a job used to print (each fixed at its cause)
    for noise in ("lazy_update", "Add type hints", "is not used", "Warning"):
        assert noise not in proc.stderr + proc.stdout, noise
    [run] = list_runs(tmp_path)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ("test_roc_auc", "test_accuracy", "test_f1", "test_log_loss", "train_seconds", "val_roc_auc",
                "train_loss"):
        assert key in m, key
    assert 0.5 < m["test_roc_auc"] <= 1.0
    assert run.data.params["model.encoder.type"] == "pool" and run.data.params["data.limit"] == "300"
    assert run.data.tags["xfer.task"] == "train" and len(run.data.tags["xfer.fingerprint"]) == 64
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "training_curve.png", "metrics.json"} <= top
    # one copy of the network: inside the logged pyfunc model; no checkpoints once finished, and
    # no second copy in the output directory
    assert "bundle" not in top and "checkpoint" not in top
    assert not list(tmp_path.glob("outputs/*/*/bundle")) and not list(tmp_path.glob("outputs/*/*/checkpoint"))
    from xfer.tracking import resolve_bundle

    b = resolve_bundle(run.info.run_id, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {"net.params", "model.json", "preprocessor.joblib", "meta.json"} <= {p.name for p in b.path.iterdir()}
    p = b.predict_proba(["A wonderful, moving film.", "Dull and far too long."])
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()


#: bad input found once the data is read: still one line, exit 2, no run
BAD_DATA = [
    (["data.files.train=/nonexistent/train.csv"], "error: /nonexistent/train.csv: file not found"),
    (["data.positive=positive"], "column 'label' row 12501: value 'pos' is not one of ['positive', 'neg']"),
    (["data.text_column=review"], "missing column 'review'"),
    (["+experiment=hotel_delhi_transfer", "data.n_train=5000"],
     "error: data.n_train: 5000 is not <= the 3079 reviews of the training split"),
]


@pytest.mark.parametrize("overrides,message", BAD + BAD_DATA, ids=[" ".join(o) for o, _ in BAD + BAD_DATA])
def test_bad_input_exits_2_with_one_line_and_no_run(tmp_path, overrides, message):
    overrides = with_experiment(overrides)
    proc = run_cli(tmp_path, overrides[0], "trainer.progress=false", *overrides[1:])
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert list_runs(tmp_path) == []
    assert not list(tmp_path.glob("outputs/*/*/bundle"))


def test_bad_csv_through_cli(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\ngood,pos\nbad \xff text,neg\n")
    proc = run_cli(tmp_path, *QUICK, f"data.files.train={bad}")
    assert proc.returncode == 2
    assert f"error: {bad}: undecodable bytes at line 3" in proc.stderr


def test_config_typo_is_reported_by_hydra(tmp_path):
    proc = run_cli(tmp_path, *QUICK, "trainer.max_epocs=1")
    assert proc.returncode != 0
    assert "max_epocs" in proc.stderr and list_runs(tmp_path) == []


def test_cfg_job_shows_every_stage(tmp_path):
    proc = run_cli(tmp_path, "+experiment=hotel_transfer", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import yaml

    cfg = yaml.safe_load(proc.stdout)
    assert cfg["base"]["data"]["name"] == "imdb" and cfg["data"]["name"] == "hotel"
    assert cfg["base"]["trainer"]["max_epochs"] == 3 and cfg["trainer"]["max_epochs"] == 8


def _reviews_csv(path):
    rows = "".join(f"\"A lovely, quiet room and kind staff, visit {i}.\",{4 + i % 2}\n"
                   f"\"Dirty, loud and rude at the desk, visit {i}.\",{1 + i % 2}\n" for i in range(60))
    path.write_text("review,stars\n" + rows)
    return path


def test_your_own_csv_with_data_csv(tmp_path):
    csv = _reviews_csv(tmp_path / "reviews.csv")
    proc = run_cli(tmp_path, *QUICK, "data=csv", f"data.files.all={csv}", "data.text_column=review",
                   "data.label_rule='stars >= 4'", "data.limit=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = list_runs(tmp_path)
    assert run.data.params["data.label_rule"] == "stars >= 4" and run.data.metrics["test_roc_auc"] > 0.9


def test_your_own_data_config_in_a_config_dir(tmp_path):
    csv = _reviews_csv(tmp_path / "reviews.csv")
    (tmp_path / "my_conf" / "data").mkdir(parents=True)
    (tmp_path / "my_conf" / "data" / "shop.yaml").write_text(
        f"name: shop\nfiles: {{all: {csv}}}\ntext_column: review\nlabel_rule: stars >= 4\n")
    proc = subprocess.run([sys.executable, "-m", "xfer.run", "--config-dir", "my_conf", *QUICK, "data=shop",
                           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "data.limit=null"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = list_runs(tmp_path)
    assert run.data.tags["xfer.data"] == "shop"
    # a user config missing a required key is one line, exit 2
    (tmp_path / "my_conf" / "data" / "broken.yaml").write_text(f"name: broken\nfiles: {{all: {csv}}}\n")
    proc = subprocess.run([sys.executable, "-m", "xfer.run", "--config-dir", "my_conf", *QUICK, "data=broken",
                           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=cli_env())
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == \
        "error: data.text_column: missing required key"


def test_default_model_with_ngram_branch_end_to_end(tmp_path):
    """The default imdb_base network (CNN + n-gram branch), small: tracked with each branch's
    test metrics, and its pyfunc model scores raw text in a fresh process."""
    proc = run_cli(tmp_path, "+experiment=imdb_base", "data.limit=300", "trainer.max_epochs=1",
                   "model.ngrams.buckets=4096", "trainer.max_len=200", "trainer.progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = list_runs(tmp_path)
    m = run.data.metrics
    assert run.data.params["model.name"] == "cnn_ngrams"
    for key in ("test_accuracy", "test_encoder_branch_accuracy", "test_ngrams_branch_accuracy",
                "test_encoder_branch_roc_auc", "test_ngrams_branch_roc_auc"):
        assert 0.0 <= m[key] <= 1.0, key
    assert int(run.data.params["params.ngrams"]) == 2 * 4097 + 3  # weight, ratio, mix
    code = ("import mlflow, pandas as pd; "
            f"mlflow.set_tracking_uri('sqlite:///{tmp_path / 'mlflow.db'}'); "
            f"m = mlflow.pyfunc.load_model('{run.data.tags['xfer.model_uri']}'); "
            "print(m.predict(pd.DataFrame({'text': ['A wonderful, moving film.', 'Dull and far too long.']})).to_json())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "probability" in out.stdout
