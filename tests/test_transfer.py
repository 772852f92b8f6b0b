import gc
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xfer.bundle import Bundle
from xfer.embed import main as embed_main
from xfer.features import layer_embeddings, write_embeddings
from xfer.errors import BundleError, ConfigError
from xfer.models import build_model, initialize
from xfer.jobs.transfer import summarise
from xfer.surgery import extend_preprocessor, transplant
from xfer.transforms import build_preprocessor, fit_preprocessor, token_vocab
from helpers import TRANSFER_QUICK, run_cli

ARCH = {"embedding": {"size": 6}, "encoder": {"type": "pool", "pooling": ["mean", "max"], "bigram_buckets": 20},
        "hidden": {"size": 5}}


@pytest.fixture()
def base(imdb_slice):
    pre = fit_preprocessor(build_preprocessor({"min_freq": 3}), imdb_slice)
    vocab = token_vocab(pre).vocabulary_size
    net = initialize(build_model(ARCH, vocab), 0)
    return Bundle(net=net, preprocessor=pre, model_cfg={"architecture": ARCH, "vocab_size": vocab, "max_len": 100})


def test_extend_vocabulary_keeps_base_ids_and_adds_target_tokens(base):
    target = pd.DataFrame({"text": ["the minibar was overpriced", "minibar minibar overpriced concierge"]})
    pre, n_new = extend_preprocessor(base.preprocessor, target, min_freq=2)
    old = token_vocab(base.preprocessor).vocab_.idx_to_token
    new = token_vocab(pre).vocab_.idx_to_token
    assert new[: len(old)] == old and n_new == len(new) - len(old)
    added = new[len(old):]
    assert "minibar" in added and "concierge" not in added  # seen once only
    assert token_vocab(base.preprocessor).vocabulary_size == len(old)  # the base is untouched


def test_transplant_copies_layers_and_extends_embedding(base):
    vocab = base.vocab_size + 3
    net = transplant(base, vocab, hidden="keep", seed=1)
    src, dst = base.net.collect_params(), net.collect_params()
    w_old, w_new = src["embedding_weight"].data().asnumpy(), dst["embedding_weight"].data().asnumpy()
    V = base.vocab_size
    assert w_new.shape == (vocab + 20, 6)
    np.testing.assert_array_equal(w_new[:V], w_old[:V])
    np.testing.assert_array_equal(w_new[vocab:], w_old[V:])  # bigram rows follow the offset
    np.testing.assert_allclose(w_new[V], w_old[2:V].mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(dst["hidden_dense_weight"].data().asnumpy(),
                                  src["hidden_dense_weight"].data().asnumpy())
    assert not np.array_equal(dst["output_weight"].data().asnumpy(), src["output_weight"].data().asnumpy())
    replaced = transplant(base, base.vocab_size, hidden="replace", seed=1)
    assert not np.array_equal(replaced.collect_params()["hidden_dense_weight"].data().asnumpy(),
                              src["hidden_dense_weight"].data().asnumpy())


@pytest.mark.parametrize("layer,dim", [("embedding", 6), ("encoder", 12), ("hidden", 5), ("output", 1)])
def test_layer_embeddings_shapes_and_pooling(base, imdb_slice, layer, dim):
    seqs = base.sequences(imdb_slice.head(37))
    vec = layer_embeddings(base.net, seqs, layer)
    assert vec.shape == (37, dim) and np.isfinite(vec).all()
    if layer == "embedding":  # mean over the valid tokens of one review
        w = base.net.collect_params()["embedding_weight"].data().asnumpy()
        np.testing.assert_allclose(vec[3], w[seqs[3]].mean(axis=0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="unknown layer"):
        layer_embeddings(base.net, seqs, "attention")


def test_write_embeddings_parquet_and_npy(tmp_path):
    vec = np.arange(6, dtype=np.float32).reshape(3, 2)
    p = write_embeddings(tmp_path / "e.parquet", vec, ["a", "b", "c"], [1, 0, 1])
    frame = pd.read_parquet(p)
    assert list(frame.columns) == ["id", "label", "e0", "e1"] and frame["id"].tolist() == ["a", "b", "c"]
    q = write_embeddings(tmp_path / "e.npy", vec, ["a", "b", "c"], [1, 0, 1])
    np.testing.assert_array_equal(np.load(q), vec)
    assert np.load(tmp_path / "e.labels.npy").tolist() == [1, 0, 1]
    with pytest.raises(ConfigError, match="must end in .parquet or .npy"):
        write_embeddings(tmp_path / "e.csv", vec, ["a", "b", "c"], [1, 0, 1])


def test_summarise_means_and_std():
    recs = [{"method": "m", "n_train": 10, "seed": s, "test_roc_auc": a, "test_accuracy": 0.5, "test_f1": 0.5,
             "train_seconds": 1.0} for s, a in ((0, 0.6), (1, 0.8))]
    row = summarise(recs).iloc[0]
    assert row["test_roc_auc"] == pytest.approx(0.7) and row["test_roc_auc_std"] == pytest.approx(0.1414, abs=1e-3)
    assert row["repeats"] == 2


# ---------------------------------------------------------------- end to end, as a user runs it
SMALL = [*TRANSFER_QUICK, "transfer.repeats=2", "transfer.tsne.n_per_domain=60", "heads.catboost.iterations=30"]


def _run(tmp_path, *overrides):
    proc = run_cli(tmp_path, *SMALL, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.e2e
def test_hotel_transfer_end_to_end_reuses_the_base_and_the_controls(tmp_path):
    import mlflow

    first = _run(tmp_path)
    assert "| method | n_train |" in first.stdout and "transfer_gradual" in first.stdout
    second = _run(tmp_path, "schedule=frozen", "transfer.vocab=extend")
    assert "Base: reused" in second.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("xfer")
    runs = client.search_runs([exp.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    bases = [r for r in runs if r.data.tags.get("xfer.task") == "train"]
    assert len(bases) == 1  # the second job did not train the base again
    children = [r for r in runs if r.data.tags.get("xfer.task") == "transfer"
                and r.data.tags.get("xfer.method") != "comparison"]
    methods = {r.data.tags["xfer.method"] for r in children}
    assert methods == {"transfer_gradual", "transfer_frozen", "scratch", "catboost_embeddings", "tfidf_lr"}
    # the controls do not depend on the schedule or the vocabulary policy: the second job reused them
    assert len(children) == 4 * 2 + 1 * 2  # first job: four methods x two splits; second: the transfer only
    assert (second.stdout + second.stderr).count("(reused)") == 3 * 2 and "| scratch |" in second.stdout
    records = json.loads(next(tmp_path.glob("outputs/*/*/records.json")).read_text())
    assert {r["method"] for r in records} >= {"scratch", "tfidf_lr"}
    for r in children:
        assert {"test_roc_auc", "test_accuracy", "test_f1", "train_seconds"} <= set(r.data.metrics)
        assert "mlflow.parentRunId" in r.data.tags
    parents = [r for r in runs if r.data.tags.get("xfer.method") == "comparison"]
    assert len(parents) == 2
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"comparison.md", "comparison.csv", "tsne_base.png", "tsne_transferred.png"} <= arts
    assert 0 < parents[0].data.metrics["oov_rate"] < 0.5
    # embeddings CLI on the transferred bundle, named by its run id (the network is inside the run's
    # pyfunc model; the output directory keeps no second copy)
    assert not list(tmp_path.glob("outputs/*/*/transfer_frozen-s0/bundle"))
    [frozen] = [r for r in children if r.data.tags["xfer.method"] == "transfer_frozen" and r.data.tags["xfer.seed"] == "0"]
    from xfer.tracking import resolve_bundle

    fetched = resolve_bundle(frozen.info.run_id, f"sqlite:///{tmp_path / 'mlflow.db'}")
    bundle = fetched.path  # a temporary download, removed with ``fetched``
    # the transferred model (also logged as a pyfunc model) reads the hotel data's own columns
    from xfer.bundle import load_bundle
    from xfer.data import data_dir

    assert all(r.data.tags.get("xfer.model_uri") for r in children if r.data.tags["xfer.method"].startswith("transfer"))
    # stored as a delta against the base run (here the embedding, shifted by the extended
    # vocabulary, is whole; the frozen layers are empty row lists): it loads through MLflow
    with np.load(bundle / "net.delta.npz") as delta:
        assert delta["rows/hidden.dense.weight"].size == 0 and "full/output.weight" in delta.files
    with pytest.raises(BundleError, match="through MLflow"):
        load_bundle(bundle)
    tb = resolve_bundle(str(bundle))
    assert tb.input_columns == ["Description", "Browser_Used", "Device_Used"]
    raw = pd.read_csv(data_dir() / "hotel" / "hotel_reviews_sample.csv.gz")
    pred = tb.predict_frame(raw)
    assert len(pred) == 499 and set(pred["label"]) <= {"happy", "not happy"} and pred["probability"].std() > 0
    served = mlflow.pyfunc.load_model(frozen.data.tags["xfer.model_uri"]).predict(raw.head(20))
    np.testing.assert_allclose(served["probability"].to_numpy(), pred["probability"].to_numpy()[:20], rtol=1e-6)
    out = tmp_path / "emb.parquet"
    assert embed_main(["--bundle", str(bundle), "--data", "hotel", "--layer", "hidden", "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 100 and frame.shape[1] == 2 + 64
    # ... and on the base, named by its MLflow run id
    npy = tmp_path / "base.npy"
    assert embed_main(["--bundle", bases[0].info.run_id, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                       "--data", "hotel", "--layer", "encoder", "--split", "all", "--out", str(npy)]) == 0
    assert np.load(npy).shape[0] == 499
    del fetched, tb
    gc.collect()
    assert not bundle.exists()  # the download went with the bundle
    assert not [p for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("xfer-bundle-")]


def test_embed_cli_bad_bundle(tmp_path, capsys):
    assert embed_main(["--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such bundle" in err and "\n" not in err


def test_probe_init_fits_the_fresh_head(base, imdb_slice):
    from xfer.encode import classification_metrics, predict_proba
    from xfer.surgery import probe_init

    seqs = base.sequences(imdb_slice)
    y = (imdb_slice["label"] == "pos").to_numpy().astype(int)
    before = base.net.output.weight.data().asnumpy().copy()
    acc = probe_init(base.net, seqs, y, C=10.0)
    assert not np.array_equal(before, base.net.output.weight.data().asnumpy())
    # the network's own output now is that logistic regression on its hidden layer
    p = predict_proba(base.net, seqs)
    assert classification_metrics(y, p)["accuracy"] == pytest.approx(acc, abs=1e-9)
    # ... and that regression is the one sklearn fits on the hidden layer's outputs
    from sklearn.linear_model import LogisticRegression

    feats = layer_embeddings(base.net, seqs, "hidden")
    assert LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(feats, y).score(feats, y) == acc


@pytest.mark.parametrize("experiment", ["hotel_transfer", "hotel_delhi_transfer"])
def test_transfer_experiments_find_the_imdb_base_run(experiment):
    """`+experiment=imdb_base` and the transfer experiments describe the same base network,
    so a transfer job reuses the base that imdb_base trained (and a change does not)."""
    from xfer.config import compose_config
    from xfer.jobs.train import base_fingerprint
    from xfer.jobs.transfer import base_config

    from xfer.schema import validate

    def fp(*overrides):
        cfg = validate(compose_config(list(overrides)))
        return base_fingerprint(base_config(cfg) if cfg["task"] == "transfer" else cfg)

    base = fp("+experiment=imdb_base")
    assert fp(f"+experiment={experiment}", "trainer.progress=false", "seed=3") == base
    # the target's own training settings never change the base
    assert fp(f"+experiment={experiment}", "optimizer.lr=0.01") == base
    assert fp(f"+experiment={experiment}", "trainer.max_epochs=2") == base
    assert fp(f"+experiment={experiment}", "model.hidden.dropout=0.5") == base
    # the base stage's do
    assert fp(f"+experiment={experiment}", "base.optimizer.lr=0.01") != base
    assert fp(f"+experiment={experiment}", "base.trainer.max_epochs=2") != base


def test_transfer_job_reuses_its_base_and_the_controls_in_process(tmp_path):
    """Two transfer jobs that differ only in what the controls do not depend on (the schedule):
    the second reuses the base and every control's finished run; a change they depend on does not."""
    from conftest import need_data
    from xfer.config import compose_config
    from xfer.jobs import run_task
    from xfer.tracking import MlflowTracker

    need_data("hotel/hotel_reviews_sample.csv.gz", "imdb/train.csv.gz")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    quick = [*TRANSFER_QUICK, "base.data.limit=200", "transfer.repeats=1", "transfer.tsne.enabled=false",
             "heads.catboost.iterations=10", "tracking.log_model=false", "transfer.save_bundle=false",
             f"tracking.uri={uri}", "base.trainer.checkpoint=false", "trainer.max_epochs=1"]

    def job(*overrides):
        return run_task(compose_config([*quick, *overrides]), tmp_path / str(len(overrides)), MlflowTracker(uri))

    first, second = job(), job("schedule=frozen")
    assert first["base"]["source"] == "trained" and second["base"]["source"] == "reused"
    assert not any(r["reused"] for r in first["records"])
    again = {r["method"]: r for r in second["records"] if r["reused"]}
    assert set(again) == {"scratch", "catboost_embeddings", "tfidf_lr"}
    for r in first["records"]:
        if r["method"] in again:  # the same run, the same figures
            assert again[r["method"]]["run_id"] == r["run_id"]
            assert again[r["method"]]["test_roc_auc"] == pytest.approx(r["test_roc_auc"], abs=1e-12)
    third = job("schedule=frozen", "heads.tfidf_lr.C=1.0")
    assert {r["method"] for r in third["records"] if r["reused"]} == {"scratch", "catboost_embeddings"}
    # CatBoost on the embeddings alone, without the sample's Browser_Used / Device_Used columns
    fourth = job("schedule=frozen", "heads.tfidf_lr.C=1.0", "heads.catboost.categorical=false",
                 "transfer.methods=[catboost_embeddings]")
    [alone] = fourth["records"]
    assert not alone["reused"] and alone["test_roc_auc"] != pytest.approx(again["catboost_embeddings"]["test_roc_auc"])
    # every run shows its data in MLflow's Dataset column and its code in Source / git commit;
    # the comparison children carry the tags the runs table groups by
    import mlflow

    client = mlflow.MlflowClient(uri)
    for r in first["records"]:
        run = client.get_run(r["run_id"])
        inputs = {(d.dataset.name, d.tags[0].value) for d in run.inputs.dataset_inputs}
        assert inputs == {("hotel", "training"), ("hotel", "validation"), ("hotel", "test")}
        assert run.data.tags["mlflow.source.type"] == "LOCAL" and run.data.tags["mlflow.source.name"]
        assert {"xfer.method", "xfer.n_train", "xfer.seed", "xfer.data"} <= set(run.data.tags)
    base = client.get_run(first["base"]["run_id"])
    assert {d.tags[0].value for d in base.inputs.dataset_inputs} == {"training", "validation", "test"}
    with_columns = next(r for r in first["records"] if r["method"] == "catboost_embeddings")
    assert client.get_run(with_columns["run_id"]).data.params["categorical"] == "Browser_Used,Device_Used"
    assert client.get_run(alone["run_id"]).data.params.get("categorical", "") == ""


def test_transfer_ngrams_extend_fits_the_unseen_buckets_of_a_transferred_branch(tmp_path):
    """With transfer.ngrams=extend the transferred n-gram branch gets the target's ratios for the
    n-grams the base never saw (its run logs how many); the default keeps the base's."""
    from conftest import need_data
    from xfer.config import compose_config
    from xfer.jobs import run_task
    from xfer.tracking import MlflowTracker

    need_data("hotel/hotel_reviews_sample.csv.gz", "imdb/train.csv.gz")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    quick = ["+experiment=hotel_transfer", "base.data.limit=200", "base.trainer.max_epochs=1", "trainer.max_epochs=1",
             "base.model.ngrams.buckets=65536", "model.ngrams.buckets=65536", "base.model.encoder.filters=8",
             "model.encoder.filters=8", "base.trainer.max_len=200", "trainer.max_len=200", "base.trainer.progress=false",
             "trainer.progress=false", "base.trainer.checkpoint=false", "transfer.methods=[transfer]",
             "transfer.repeats=1", "transfer.tsne.enabled=false", "transfer.save_bundle=false",
             "tracking.log_model=false", f"tracking.uri={uri}"]
    keep = run_task(compose_config(quick), tmp_path / "keep", MlflowTracker(uri))
    extend = run_task(compose_config([*quick, "transfer.ngrams=extend"]), tmp_path / "extend", MlflowTracker(uri))
    assert extend["base"]["source"] == "reused"
    import mlflow

    client = mlflow.MlflowClient(uri)
    [plain], [extended] = keep["records"], extend["records"]
    assert client.get_run(extended["run_id"]).data.metrics["extended_buckets"] > 100  # hotel words IMDB lacks
    assert "extended_buckets" not in client.get_run(plain["run_id"]).data.metrics
    assert extended["test_roc_auc"] != pytest.approx(plain["test_roc_auc"], abs=1e-9)
