import json

import numpy as np
import pytest

from xfer.bundle import load_bundle, save_bundle
from xfer.errors import BundleError
from xfer.models import build_model, initialize
from xfer.encode import classification_metrics, predict_proba, prepare_sequences
from xfer.train import fit, seed_everything
from xfer.transforms import fit_preprocessor, build_preprocessor, apply_preprocessor, token_vocab

MODEL = {"embedding": {"size": 16, "sparse_grad": True}, "encoder": {"type": "pool", "pooling": ["mean"]},
         "hidden": {"size": 8, "dropout": 0.1}}
TRAINER = {"batch_size": 16, "max_epochs": 4, "patience": 4, "progress": False, "num_buckets": 3}
OPT = {"name": "adam", "lr": 0.02, "clip_gradient_norm": 5.0, "lr_schedule": {"type": "cosine"}}


def separable(n, seed):
    """Positive reviews draw words 2..11, negative ones 12..21, plus shared noise words 22..41."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, n)
    seqs = []
    for label in y:
        k = rng.randint(3, 15)
        own = rng.randint(2, 12, k) if label else rng.randint(12, 22, k)
        seqs.append(np.concatenate([own, rng.randint(22, 42, k)]).astype(np.int32))
    return seqs, y


def _train(seed, model=MODEL, trainer=TRAINER, opt=OPT):
    seed_everything(seed)
    net = initialize(build_model(model, 42), seed)
    res = fit(net, separable(300, 1), separable(100, 2), trainer, opt, seed=seed)
    return net, res


def test_learns_a_separable_set():
    net, res = _train(0)
    x, y = separable(200, 3)
    m = classification_metrics(y, predict_proba(net, x))
    assert m["roc_auc"] > 0.98 and m["accuracy"] > 0.9
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert set(res.history[0]) >= {"train_loss", "val_roc_auc", "val_accuracy", "val_f1", "val_log_loss",
                                   "examples_per_second"}


@pytest.mark.parametrize("encoder", [{"type": "pool", "pooling": ["mean"]}, {"type": "cnn", "filters": 4},
                                     {"type": "gru", "hidden_size": 4}])
def test_same_seed_same_metrics(encoder):
    model = {**MODEL, "encoder": encoder, "embedding": {"size": 8, "dropout": 0.2}}
    trainer = {**TRAINER, "max_epochs": 2}
    _, a = _train(5, model, trainer)
    _, b = _train(5, model, trainer)
    timing = ("epoch_seconds", "examples_per_second")
    strip = lambda hist: [{k: v for k, v in h.items() if k not in timing} for h in hist]  # noqa: E731
    assert strip(a.history) == strip(b.history)  # bit-identical losses and validation metrics
    _, c = _train(6, model, trainer)
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_best_epoch_is_restored():
    seed_everything(0)
    net = initialize(build_model(MODEL, 42), 0)
    val = separable(100, 2)
    res = fit(net, separable(300, 1), val, {**TRAINER, "max_epochs": 3}, OPT, seed=0)
    best = int(np.argmax([h["val_roc_auc"] for h in res.history]))
    assert res.best_epoch == best
    assert classification_metrics(val[1], predict_proba(net, val[0]))["roc_auc"] == pytest.approx(
        res.history[best]["val_roc_auc"], abs=1e-9)


def test_classification_metrics_values():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]))
    assert m["roc_auc"] == 1.0 and m["accuracy"] == 0.75 and m["f1"] == pytest.approx(0.8)


def test_prepare_sequences_truncates_and_fills_empty():
    out = prepare_sequences([np.arange(2, 12), np.array([], dtype=np.int32)], max_len=4)
    assert out[0].tolist() == [2, 3, 4, 5] and out[1].tolist() == [1]
    assert prepare_sequences([np.arange(2, 12)], max_len=4, truncate="tail")[0].tolist() == [8, 9, 10, 11]


# ---------------------------------------------------------------- bundle
@pytest.fixture()
def bundle_dir(tmp_path, imdb_slice):
    pre = fit_preprocessor(build_preprocessor({"min_freq": 2}), imdb_slice)
    vocab = token_vocab(pre).vocabulary_size
    model = {"embedding": {"size": 8}, "encoder": {"type": "pool", "bigram_buckets": 100}, "hidden": {"size": 4}}
    net = initialize(build_model(model, vocab), 0)
    ids, _ = apply_preprocessor(pre, imdb_slice)
    seqs = prepare_sequences(ids, 200, vocab, 100)
    y = (imdb_slice["label"] == "pos").to_numpy().astype(int)
    fit(net, (seqs, y), (seqs[:50], y[:50]), {**TRAINER, "max_epochs": 1}, OPT)
    path = save_bundle(tmp_path / "bundle", net, pre, model, vocab, {"0": "neg", "1": "pos"}, max_len=200,
                       meta={"metrics": {"test_accuracy": 0.5}})
    expected = predict_proba(net, seqs)
    return path, expected, imdb_slice


def test_bundle_round_trip_identical_predictions(bundle_dir):
    path, expected, frame = bundle_dir
    b = load_bundle(path)
    got = b.predict_proba(frame[["text"]])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(b.predict_proba(frame["text"].tolist()), expected)
    assert b.meta["metrics"]["test_accuracy"] == 0.5 and b.labels == {"0": "neg", "1": "pos"}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".bundle")]


@pytest.mark.parametrize("damage,pattern", [
    (lambda p: (p / "net.params").unlink(), "net.params: missing file"),
    (lambda p: (p / "meta.json").unlink(), "meta.json: missing file"),
    (lambda p: (p / "net.params").write_bytes(b"garbage"), "net.params: checksum mismatch"),
    (lambda p: (p / "preprocessor.joblib").write_bytes(b"garbage"), "preprocessor.joblib: checksum mismatch"),
])
def test_damaged_bundle_gives_one_clear_error(bundle_dir, damage, pattern):
    path = bundle_dir[0]
    damage(path)
    with pytest.raises(BundleError, match=pattern) as exc:
        load_bundle(path)
    assert "\n" not in str(exc.value)


def test_bundle_architecture_mismatch(bundle_dir):
    path = bundle_dir[0]
    meta = json.loads((path / "meta.json").read_text())
    model = json.loads((path / "model.json").read_text())
    model["architecture"]["hidden"]["size"] = 5
    (path / "model.json").write_text(json.dumps(model))
    meta["files"].pop("model.json")
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="does not match the architecture"):
        load_bundle(path)


def test_bundle_vocabulary_mismatch(bundle_dir):
    path = bundle_dir[0]
    meta = json.loads((path / "meta.json").read_text())
    model = json.loads((path / "model.json").read_text())
    model["vocab_size"] += 3
    (path / "model.json").write_text(json.dumps(model))
    meta["files"].pop("model.json")
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="vocabulary mismatch"):
        load_bundle(path)
    with pytest.raises(BundleError, match="bundle directory not found"):
        load_bundle(path.parent / "nope")


@pytest.mark.parametrize("opt", [{"name": "adamw", "lr": 0.02, "wd": 0.01}, {"name": "sgd", "lr": 0.2},
                                 {"name": "adam", "lr": 0.02, "lr_schedule": {"type": "step", "step_updates": 5}}])
def test_optimizers_from_config_learn(opt):
    seed_everything(0)
    net = initialize(build_model(MODEL, 42), 0)
    res = fit(net, separable(300, 1), separable(100, 2), {**TRAINER, "max_epochs": 3}, opt, seed=0)
    assert res.best_val_roc_auc > 0.9


def test_unknown_optimizer_is_a_config_error():
    from xfer.errors import ConfigError

    net = initialize(build_model(MODEL, 42), 0)
    with pytest.raises(ConfigError, match="optimizer.name: 'adamax2' is not one of adam, adamw, sgd"):
        fit(net, separable(30, 1), separable(10, 2), TRAINER, {"name": "adamax2"})


# ---------------------------------------------------------------- delta bundles
def test_param_delta_keeps_changed_and_added_rows_only():
    from xfer.bundle import apply_delta, param_delta

    rng = np.random.RandomState(0)
    base = {"emb": rng.rand(100, 4).astype(np.float32), "dense": rng.rand(3, 5).astype(np.float32),
            "same": rng.rand(50, 1).astype(np.float32)}
    new = {"emb": np.vstack([base["emb"], rng.rand(2, 4)]).astype(np.float32), "dense": base["dense"] + 1,
           "same": base["same"].copy()}
    new["emb"][[3, 70]] += 0.5
    delta = param_delta(new, base)
    assert delta["rows/emb"].tolist() == [3, 70, 100, 101] and delta["rows/same"].size == 0
    assert "full/dense" in delta  # every row changed: stored whole
    out = apply_delta(delta, base, {k: v.shape for k, v in new.items()})
    for k in new:
        np.testing.assert_array_equal(out[k], new[k])
    with pytest.raises(ValueError, match="dense"):
        apply_delta(delta, base, {**{k: v.shape for k, v in new.items()}, "dense": (3, 6)})


def test_delta_bundle_loads_to_the_same_predictions_and_checks_its_base(bundle_dir, tmp_path):
    import shutil

    from xfer.data import sha256_file

    path, _, frame = bundle_dir
    base = load_bundle(path)
    net = load_bundle(path).net
    w = net.collect_params()[next(k for k in net.collect_params() if k.endswith("embedding_weight"))]
    arr = w.data().asnumpy()
    arr[[5, 9]] += 0.25  # a transfer that relearned two rows
    w.set_data(mx_array(arr))
    want = predict_proba(net, base.sequences(frame))
    base.ref = str(path)
    delta = save_bundle(tmp_path / "child", net, base.preprocessor, base.model_cfg["architecture"], base.vocab_size,
                        base.labels, max_len=200, base=base)
    assert (delta / "net.delta.npz").is_file() and not (delta / "net.params").exists()
    assert (delta / "net.delta.npz").stat().st_size < (path / "net.params").stat().st_size / 2
    got = load_bundle(delta)
    np.testing.assert_array_equal(got.predict_proba(frame[["text"]]), want)
    # the base must be the very network the delta was taken from, and must be there
    fetched = []
    load_bundle(delta, fetch=lambda ref: fetched.append(ref) or load_bundle(ref))
    assert fetched == [str(path)]
    shutil.copytree(path, tmp_path / "base_copy")
    base.ref = str(tmp_path / "base_copy")
    moved = save_bundle(tmp_path / "child2", net, base.preprocessor, base.model_cfg["architecture"], base.vocab_size,
                        base.labels, base=base)
    (tmp_path / "base_copy" / "labels.json").write_text('{"0": "a", "1": "b"}')
    meta = json.loads((tmp_path / "base_copy" / "meta.json").read_text())
    meta["files"]["labels.json"] = sha256_file(tmp_path / "base_copy" / "labels.json")  # a consistent other base
    (tmp_path / "base_copy" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="not the network this bundle was trained from"):
        load_bundle(moved, fetch=lambda ref: load_bundle(ref))
    shutil.rmtree(tmp_path / "base_copy")
    with pytest.raises(BundleError, match="cannot load its base network"):
        load_bundle(moved, fetch=lambda ref: load_bundle(ref))
    ref = json.loads((moved / "base.json").read_text())
    (moved / "base.json").write_text(json.dumps({**ref, "ref": "0" * 32}))
    meta = json.loads((moved / "meta.json").read_text())
    meta["files"].pop("base.json")
    (moved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="load this bundle through MLflow"):
        load_bundle(moved)


def mx_array(a):
    import mxnet as mx

    return mx.nd.array(a)


# --------------------------------------------------------------------------- epoch selection
#: validation ROC-AUC per epoch of a transfer on a 50-review hotel-sample split (34 happy): the
#: first epoch leads by less than the noise of 50 reviews
NOISY = [0.9626, 0.9608, 0.9537, 0.9483, 0.9483, 0.9430, 0.9430, 0.9465]


def _select(aucs, labels, patience=3, tolerance=0.0):
    """(kept epoch, last epoch run) of EarlyStopping over a scripted validation curve."""
    from xfer.train import replay_early_stopping

    return replay_early_stopping(aucs, labels, patience, tolerance)


def test_strict_selection_keeps_the_argmax_and_the_earlier_of_ties():
    labels = [1] * 34 + [0] * 16
    assert _select(NOISY, labels) == (0, 3)  # stopped after 3 worse epochs
    assert _select([0.90, 0.90, 0.85], labels, patience=5) == (0, 2)


def test_tolerance_keeps_a_later_epoch_within_the_noise_of_the_validation_set():
    small = [1] * 34 + [0] * 16
    assert _select(NOISY, small, tolerance=1.0) == (7, 7)  # SE ~0.03: all as good
    # a drop beyond one standard error is worse: not kept, and it counts towards patience
    assert _select([0.90, 0.80, 0.89], small, patience=5, tolerance=1.0) == (2, 2)
    assert _select([0.90, 0.80, 0.80, 0.80], small, patience=3, tolerance=1.0) == (0, 3)
    # on 2,500 reviews one SE is ~0.004: only epoch 2 (-0.002) is as good, the later ones are worse
    big = [1] * 1700 + [0] * 800
    assert _select(NOISY, big, tolerance=1.0) == (1, 4)


def test_auc_standard_error_matches_the_spread_of_simulated_aucs():
    from xfer.encode import auc_standard_error

    rng = np.random.RandomState(0)
    n_pos, n_neg, shift = 34, 16, 1.8  # binormal scores, true AUC = Phi(1.8 / sqrt 2) ~ 0.90
    aucs = []
    for _ in range(2000):
        pos, neg = rng.normal(shift, 1, n_pos), rng.normal(0, 1, n_neg)
        aucs.append((pos[:, None] > neg[None, :]).mean())
    se = auc_standard_error(float(np.mean(aucs)), n_pos, n_neg)
    assert se == pytest.approx(np.std(aucs), rel=0.2)
    assert auc_standard_error(0.9, 340, 160) < se / 2.5  # ~ 1 / sqrt(n)
    assert np.isnan(auc_standard_error(0.9, 50, 0))


def test_neutral_trainer_keys_stay_out_of_fingerprints():
    from xfer.jobs.train import learned_trainer

    trainer = {"max_epochs": 3, "patience": 2, "progress": True}
    assert learned_trainer({**trainer, "select_tolerance": 0.0}) == learned_trainer(trainer)
    assert learned_trainer({**trainer, "select_tolerance": 1.0}) != learned_trainer(trainer)


def test_fit_with_a_wide_tolerance_keeps_the_last_epoch():
    seed_everything(0)
    net = initialize(build_model(MODEL, 42), 0)
    val = separable(100, 2)
    res = fit(net, separable(300, 1), val, {**TRAINER, "max_epochs": 3, "select_tolerance": 1000.0}, OPT, seed=0)
    assert res.best_epoch == len(res.history) - 1 == 2
    assert res.best_val_roc_auc == max(h["val_roc_auc"] for h in res.history)
    assert classification_metrics(val[1], predict_proba(net, val[0]))["roc_auc"] == pytest.approx(
        res.history[-1]["val_roc_auc"], abs=1e-9)
