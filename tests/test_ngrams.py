"""The n-gram branch (models.NgramBag): featurization, naive-Bayes ratios, padding,
training, freezing, transplant and bundles."""
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from xfer.bundle import load_bundle, save_bundle
from xfer.errors import ConfigError
from xfer.freeze import make_schedule, unfreeze
from xfer.models import bag_spec, build_model, initialize, layer_names, ngram_bag
from xfer.encode import bags_of, classification_metrics, encode_frame, predict_proba, prepare_sequences
from xfer.train import fit, seed_everything
from xfer.transforms import build_preprocessor, fit_preprocessor, token_vocab

V, BUCKETS = 42, 997
MODEL = {"embedding": {"size": 8, "dropout": 0.2}, "encoder": {"type": "cnn", "widths": [2, 3], "filters": 4},
         "hidden": {"size": 6, "dropout": 0.1}, "ngrams": {"buckets": BUCKETS, "n": 3, "lr_mult": 2.0}}
TRAINER = {"batch_size": 16, "max_epochs": 3, "patience": 3, "progress": False, "num_buckets": 3}
OPT = {"name": "adam", "lr": 0.01, "clip_gradient_norm": 5.0}


def test_bag_is_distinct_hashed_ngrams_in_range():
    ids = np.array([5, 6, 7, 5, 6], dtype=np.int32)
    bag = ngram_bag(ids, BUCKETS, 3)
    # 3 distinct unigrams, 3 distinct bigrams (5 6 twice), 3 trigrams: at most 9 distinct buckets
    assert 7 <= len(bag) <= 9 and len(bag) == len(np.unique(bag))
    assert bag.min() >= 1 and bag.max() <= BUCKETS and (np.diff(bag) > 0).all()
    assert len(ngram_bag(ids, BUCKETS, 1)) == 3
    assert set(ngram_bag(ids, BUCKETS, 2)) <= set(bag)
    assert len(ngram_bag(np.array([9], dtype=np.int32), BUCKETS, 3)) == 1
    # word order matters beyond unigrams
    assert set(ngram_bag(ids[::-1], BUCKETS, 2)) != set(ngram_bag(ids, BUCKETS, 2))


def test_bag_is_the_same_in_another_process():
    code = ("import numpy as np; from xfer.models import ngram_bag; "
            "print(ngram_bag(np.arange(2, 40, dtype=np.int32), 4194304, 3).tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(outs) == 1
    assert eval(outs.pop()) == ngram_bag(np.arange(2, 40, dtype=np.int32), 4194304, 3).tolist()


def test_prepare_sequences_bag_covers_the_whole_review():
    ids = [np.arange(2, 30, dtype=np.int32), np.array([], dtype=np.int32)]
    out = prepare_sequences(ids, max_len=5, vocab_size=V, bag={"buckets": BUCKETS, "n": 2})
    (seq, bag), (empty, empty_bag) = out
    assert seq.tolist() == [2, 3, 4, 5, 6]
    assert bag.tolist() == ngram_bag(ids[0], BUCKETS, 2).tolist()  # not truncated
    assert empty.tolist() == [1] and len(empty_bag) == 1
    assert bags_of(out)[0] is bag and bags_of([seq]) is None


def _net(seed=0, hybridize=False):
    net = initialize(build_model(MODEL, V), seed)
    if hybridize:
        net.hybridize(static_alloc=True)
    return net


def separable(n, seed):
    """test_train's separable reviews, featurized for a network with an n-gram branch."""
    from test_train import separable as separable_ids

    seqs, y = separable_ids(n, seed)
    return prepare_sequences(seqs, vocab_size=V, bag=bag_spec(MODEL)), y


def test_naive_bayes_ratios():
    net = _net()
    assert not net.ngrams.fitted()
    bags = [np.array([1, 2]), np.array([1, 3]), np.array([2])]
    net.ngrams.fit_ratios(bags, np.array([1, 0, 1]))
    r = net.ngrams.ratio.data().asnumpy()[:, 0]
    # counts + 1 over all BUCKETS + 1 slots: positive b1 2, b2 3, b3 1 (total 3 + 998);
    # negative b1 2, b2 1, b3 2 (total 2 + 998)
    P, Q = 3 + BUCKETS + 1, 2 + BUCKETS + 1
    assert r[1] == pytest.approx(np.log(2 / P) - np.log(2 / Q), abs=1e-6)
    assert r[2] == pytest.approx(np.log(3 / P) - np.log(1 / Q), abs=1e-6)
    assert r[3] == pytest.approx(np.log(1 / P) - np.log(2 / Q), abs=1e-6)
    assert r[0] == 0 and (r[4:] == 0).all()  # padding and unseen buckets
    assert net.ngrams.fitted()


@pytest.mark.parametrize("hybridize", [False, True])
def test_padding_does_not_change_predictions(hybridize):
    net = _net(hybridize=hybridize)
    x, y = separable(40, 0)
    net.ngrams.fit_ratios(bags_of(x), y)
    seqs = x[:3]
    T, M = max(len(s) for s, _ in seqs) + 5, max(len(b) for _, b in seqs) + 7
    tokens, bags = np.zeros((3, T)), np.zeros((3, M))
    for i, (s, b) in enumerate(seqs):
        tokens[i, :len(s)], bags[i, :len(b)] = s, b
    batched = net(mx.nd.array(tokens), mx.nd.array([len(s) for s, _ in seqs]), mx.nd.array(bags)).asnumpy()
    assert batched.shape == (3, 3)
    np.testing.assert_allclose(batched[:, 0], batched[:, 1] + batched[:, 2], rtol=1e-5, atol=1e-6)
    for i, (s, b) in enumerate(seqs):
        alone = net(mx.nd.array(s[None]), mx.nd.array([len(s)]), mx.nd.array(b[None])).asnumpy()
        np.testing.assert_allclose(batched[i], alone[0], rtol=1e-5, atol=1e-6)


def test_layers_outputs_and_errors():
    net = _net()
    assert layer_names(net) == ["embedding", "encoder", "hidden", "ngrams", "output"]
    tokens, lengths, bags = mx.nd.array([[2, 3, 4]]), mx.nd.array([3]), mx.nd.array([[5, 9, 0]])
    outs = net.layer_outputs(tokens, lengths, bags)
    assert outs["ngrams"].shape == (1, 1) and outs["output"].shape == (1, 1)
    with pytest.raises(ValueError, match="n-gram branch"):
        net(tokens, lengths)
    with pytest.raises(ConfigError, match="output.size 1"):
        build_model({**MODEL, "output": {"size": 2}}, V)
    with pytest.raises(ConfigError, match="ngrams.n"):
        build_model({**MODEL, "ngrams": {"buckets": 10, "n": 0}}, V)
    assert bag_spec({**MODEL, "ngrams": {"buckets": 0}}) is None
    assert net.ngrams.weight.lr_mult == 2.0


def _fit(seed):
    seed_everything(seed)
    net = _net(seed)
    res = fit(net, separable(300, 1), separable(100, 2), TRAINER, OPT, seed=seed)
    return net, res


def test_both_branches_learn_and_ratios_come_from_training_set():
    net, res = _fit(0)
    assert net.ngrams.fitted()
    x, y = separable(200, 3)
    m = classification_metrics(y, predict_proba(net, x))
    assert m["roc_auc"] > 0.98 and m["accuracy"] > 0.9
    # each branch alone separates the classes too (each was fit to the labels)
    outs = net.layer_outputs(*next(_batches(x)))
    yy = y[:len(outs["output"])]
    for name in ("output", "ngrams"):
        assert classification_metrics(yy, 1 / (1 + np.exp(-outs[name].asnumpy()[:, 0])))["roc_auc"] > 0.95, name
    _, again = _fit(0)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in res.history]


def _batches(x):
    from xfer.encode import iter_batches

    for inputs, _, idx in iter_batches(x, None, 10_000, num_buckets=1):
        assert (idx == np.arange(len(x))).all()
        yield inputs


def test_ratio_never_trains_even_when_unfrozen():
    net = _net()
    x, y = separable(100, 1)
    net.ngrams.fit_ratios(bags_of(x), y)
    before = net.ngrams.ratio.data().asnumpy().copy()
    unfreeze(net, "ngrams")
    make_schedule({"name": "full"}).apply(net, 0)
    assert net.ngrams.ratio.grad_req == "null" and net.ngrams.weight.grad_req == "write"
    fit(net, (x, y), separable(50, 2), {**TRAINER, "max_epochs": 1}, OPT)
    np.testing.assert_array_equal(net.ngrams.ratio.data().asnumpy(), before)
    assert make_schedule({"name": "gradual"}).trainable_at(net, 1) == ["output", "ngrams"]  # first below the head


def test_bundle_round_trip_and_transplant(tmp_path, imdb_slice):
    from xfer.surgery import transplant

    frame = imdb_slice.head(200).assign(label=lambda f: f["label"].eq("pos").astype(int))
    pre = fit_preprocessor(build_preprocessor({}), frame)
    vocab = token_vocab(pre).vocabulary_size
    model = {**MODEL, "ngrams": {"buckets": 1 << 16, "n": 3}}
    net = initialize(build_model(model, vocab), 0)
    seqs = encode_frame(pre, frame, model, 50)
    fit(net, (seqs, frame["label"].to_numpy()), (seqs[:40], frame["label"].to_numpy()[:40]),
        {**TRAINER, "max_epochs": 1}, OPT)
    p = predict_proba(net, seqs)
    path = save_bundle(tmp_path / "b", net, pre, model, vocab, {"0": "neg", "1": "pos"}, max_len=50)
    bundle = load_bundle(path)
    np.testing.assert_allclose(bundle.predict_proba(frame), p, rtol=1e-5, atol=1e-6)
    moved = transplant(bundle, vocab + 5, seed=1)
    for name in ("ngrams_weight", "ngrams_ratio"):
        np.testing.assert_array_equal(moved.collect_params()[name].data().asnumpy(),
                                      net.collect_params()[name].data().asnumpy())


def test_mix_is_stacked_on_validation_reviews():
    net, _ = _fit(0)
    mix = net.ngrams.mix.data().asnumpy()[0]
    assert not np.allclose(mix, [1, 1, 0])  # fitted, not the initial plain sum
    x, y = separable(50, 4)
    out = net(*next(_batches(x))).asnumpy()
    np.testing.assert_allclose(out[:, 0], out[:, 1] * mix[0] + out[:, 2] * mix[1] + mix[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.ngrams.combine(out[:, 1:3]), out[:, 0], rtol=1e-5, atol=1e-5)
    # the weights are a logistic regression on the validation branch logits, penalised towards
    # the plain sum: at the fitted mix the objective's gradient vanishes (weights > 0 here)
    xv, yv = separable(100, 2)
    val = net(*next(_batches(xv))).asnumpy()[:, 1:3].astype(np.float64)
    assert (mix[:2] > 0).all()
    p = 1 / (1 + np.exp(-(val @ mix[:2] + mix[2])))
    grad = np.append(val.T @ (p - yv) + (mix[:2] - 1), (p - yv).sum())
    np.testing.assert_allclose(grad, 0, atol=2e-3)
    assert net.ngrams.fit_mix(val, np.ones(len(val))) is None  # one class: unchanged
    np.testing.assert_array_equal(net.ngrams.mix.data().asnumpy()[0], mix)


def test_bag_buckets_are_spread_evenly_for_power_of_two_buckets():
    """Regression: ``(h * 8 + n) % 2**22`` kept only 19 bits of a bigram's hash, so 2-grams and
    3-grams each fell into an eighth of the buckets; the mixer spreads them over all."""
    ids = np.random.RandomState(0).randint(2, 60_000, 5_000).astype(np.int32)
    bag = ngram_bag(ids, 1 << 22, 3)
    share = np.bincount((bag - 1) % 8, minlength=8) / len(bag)
    assert share.min() > 0.1 and share.max() < 0.15


def test_inference_batches_cover_every_review_once_with_few_shapes():
    from xfer.encode import sorted_batches

    rng = np.random.RandomState(0)
    lengths = rng.randint(1, 700, 3000)
    batches = sorted_batches(lengths, 16, 4096)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(3000))
    shapes = set()
    for b in batches:
        t = -(-lengths[b].max() // 16) * 16
        assert len(b) * t <= 4096 or len(b) == 1
        shapes.add((len(b), t))
    # the shapes depend on the padded length (<= 44 values) plus one last partial batch
    assert len(shapes) <= 700 // 16 + 2
    assert len(sorted_batches(lengths[::-1], 16, 4096)) == len(batches)


def test_predictions_do_not_depend_on_batching():
    from xfer.encode import predict_logits

    net = _net(hybridize=True)
    x, y = separable(300, 1)
    net.ngrams.fit_ratios(bags_of(x), y)
    by_tokens = predict_logits(net, x)                    # sorted, length-grouped batches
    by_rows = predict_logits(net, x, batch_size=7)        # FixedBucketSampler batches of 7
    one_by_one = np.vstack([predict_logits(net, [s]) for s in x[:20]])
    np.testing.assert_allclose(by_tokens, by_rows, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_tokens[:20], one_by_one, rtol=1e-5, atol=1e-6)


def test_categorical_values_join_the_bag_as_their_own_features():
    import pandas as pd

    from xfer.models import bag_buckets, category_keys

    frame = pd.DataFrame({"text": ["a b c"] * 4, "Browser": ["Chrome", "Firefox", "Chrome", None],
                          "Device": ["Mobile"] * 4})
    keys = category_keys(frame, ["Browser", "Device"])
    assert [len(k) for k in keys] == [2] * 4
    assert keys[0].tolist() == keys[2].tolist() and keys[0][0] != keys[1][0] and keys[0][1] == keys[1][1]
    assert len({k[0] for k in keys}) == 3  # a missing value is a value of its own
    nullable = frame.astype({"Browser": "string"})  # pandas' own missing value, pd.NA
    assert [k.tolist() for k in category_keys(nullable, ["Browser", "Device"])] == [k.tolist() for k in keys]
    # the column name is part of the feature: the same value in another column is another key
    swapped = category_keys(pd.DataFrame({"Browser": ["Mobile"], "Device": ["Mobile"]}), ["Browser", "Device"])[0]
    assert swapped[0] != swapped[1]
    assert category_keys(frame[["text"]], ["Browser"])[0].size == 0  # a column the frame lacks adds nothing
    ids = np.array([5, 6, 7], dtype=np.int32)
    plain, with_cat = ngram_bag(ids, BUCKETS, 3), ngram_bag(ids, BUCKETS, 3, keys[0])
    assert set(plain) < set(with_cat) and set(with_cat) - set(plain) <= set(bag_buckets(keys[0], BUCKETS))
    assert ngram_bag(ids, BUCKETS, 3, np.zeros(0, dtype=np.uint64)).tolist() == plain.tolist()


def test_encode_frame_reads_the_columns_the_architecture_names(imdb_slice):
    import pandas as pd

    from xfer.models import bag_buckets, category_keys, with_categorical

    frame = pd.DataFrame({"text": imdb_slice["text"].head(6), "Device": ["Mobile", "Desktop"] * 3})
    pre = fit_preprocessor(build_preprocessor({}), frame)
    arch = with_categorical(MODEL, ["Device"])
    assert arch["ngrams"]["categorical"] == ["Device"]
    assert with_categorical({**MODEL, "ngrams": {**MODEL["ngrams"], "categorical": []}}, ["Device"])["ngrams"][
        "categorical"] == []
    with pytest.raises(ConfigError, match=r"model.ngrams.categorical: 'Browser' not among"):
        with_categorical({**MODEL, "ngrams": {**MODEL["ngrams"], "categorical": ["Browser"]}}, ["Device"])
    mobile = set(bag_buckets(category_keys(frame.head(1), ["Device"])[0], BUCKETS))
    with_cat, text_only = bags_of(encode_frame(pre, frame, arch)), bags_of(encode_frame(pre, frame, MODEL))
    assert mobile <= set(with_cat[0]) and mobile <= set(with_cat[2]) and not mobile & set(with_cat[1]) - set(text_only[1])
    assert all(set(t) <= set(c) for t, c in zip(text_only, with_cat))


def test_a_transferred_branch_learns_the_targets_categorical_values(imdb_slice):
    import pandas as pd

    from xfer.models import bag_buckets, category_keys, with_categorical
    from xfer.surgery import fit_target_ngrams

    frame = imdb_slice.iloc[280:320].assign(label=lambda f: f["label"].eq("pos").astype(int))  # both classes
    frame["Device"] = np.where(frame["label"] == 1, "Mobile", "Desktop")
    pre = fit_preprocessor(build_preprocessor({}), frame)
    model = {**MODEL, "ngrams": {**MODEL["ngrams"], "buckets": 1 << 20}}  # no collisions with the reviews' n-grams
    net = initialize(build_model(model, token_vocab(pre).vocabulary_size), 0)
    base_seqs = encode_frame(pre, frame, model)
    net.ngrams.fit_ratios(bags_of(base_seqs), frame["label"].to_numpy())  # the base's ratios (no columns)
    before = net.ngrams.ratio.data().asnumpy().copy()
    arch = with_categorical(model, ["Device"])
    assert fit_target_ngrams(net, base_seqs, frame["label"].to_numpy(), frame, model) == {"category_buckets": 0}
    seqs = encode_frame(pre, frame, arch)
    n = fit_target_ngrams(net, seqs, frame["label"].to_numpy(), frame, arch)["category_buckets"]
    cats = {v: bag_buckets(category_keys(pd.DataFrame({"Device": [v]}), ["Device"])[0], 1 << 20)
            for v in ("Mobile", "Desktop")}
    assert n == 2
    after, weight = net.ngrams.ratio.data().asnumpy(), net.ngrams.weight.data().asnumpy()
    assert after[cats["Mobile"], 0] > 2 and after[cats["Desktop"], 0] < -2  # all positives are Mobile
    assert (weight[np.concatenate(list(cats.values())), 0] == 1).all()
    changed = np.flatnonzero(after[:, 0] != before[:, 0])
    assert set(changed) <= set(np.concatenate(list(cats.values())))


def test_extend_gives_the_targets_ratios_to_the_ngrams_the_base_never_saw(imdb_slice):
    from xfer.surgery import fit_target_ngrams

    label = lambda f: f["label"].eq("pos").astype(int).to_numpy()  # noqa: E731
    base, target = imdb_slice.iloc[270:310], imdb_slice.iloc[list(range(250, 270)) + list(range(310, 330))]
    assert len(set(label(base))) == len(set(label(target))) == 2
    pre = fit_preprocessor(build_preprocessor({}), base)
    model = {**MODEL, "ngrams": {**MODEL["ngrams"], "buckets": 1 << 20}}
    net = initialize(build_model(model, token_vocab(pre).vocabulary_size), 0)
    net.ngrams.fit_ratios(bags_of(encode_frame(pre, base, model)), label(base))  # the base's ratios
    before = net.ngrams.ratio.data().asnumpy()[:, 0].copy()
    weight_before = net.ngrams.weight.data().asnumpy()[:, 0].copy()
    seqs = encode_frame(pre, target, model)
    in_target = np.unique(np.concatenate(bags_of(seqs)))
    unseen = in_target[(in_target != 0) & (before[in_target] == 0)]
    assert 0 < len(unseen) < len(in_target) - 1  # the target shares some n-grams with the base, not all
    assert fit_target_ngrams(net, seqs, label(target), target, model, extend=True) == {
        "category_buckets": 0, "extended_buckets": len(unseen)}
    after, weight = net.ngrams.ratio.data().asnumpy()[:, 0], net.ngrams.weight.data().asnumpy()[:, 0]
    changed = np.flatnonzero(after != before)
    assert set(changed) <= set(unseen) and len(changed) > 0.9 * len(unseen)  # a ratio can be exactly 0 again
    assert (weight[unseen] == 1).all() and (np.delete(weight, unseen) == np.delete(weight_before, unseen)).all()
    assert after[0] == 0  # padding
    assert fit_target_ngrams(net, seqs[:0], label(target)[:0], target[:0], model, extend=True)["extended_buckets"] == 0


def test_categorical_values_and_unseen_ngrams_are_fitted_in_one_pass_as_one_after_the_other(imdb_slice):
    from xfer.models import with_categorical
    from xfer.surgery import fit_target_ngrams

    base = imdb_slice.iloc[270:310].assign(label=lambda f: f["label"].eq("pos").astype(int))
    target = imdb_slice.iloc[list(range(250, 270)) + list(range(310, 330))].assign(label=lambda f: f["label"].eq("pos").astype(int))
    target["Device"] = np.where(target["label"] == 1, "Mobile", "Desktop")
    pre = fit_preprocessor(build_preprocessor({}), base)
    model = {**MODEL, "ngrams": {**MODEL["ngrams"], "buckets": 1 << 20}}
    arch = with_categorical(model, ["Device"])
    nets = []
    for _ in range(2):
        nets.append(initialize(build_model(model, token_vocab(pre).vocabulary_size), 0))
        nets[-1].ngrams.fit_ratios(bags_of(encode_frame(pre, base, model)), base["label"].to_numpy())
    seqs, y = encode_frame(pre, target, arch), target["label"].to_numpy()
    both = fit_target_ngrams(nets[0], seqs, y, target, arch, extend=True)
    cats = fit_target_ngrams(nets[1], seqs, y, target, arch)
    then = fit_target_ngrams(nets[1], seqs, y, target, model, extend=True)  # the categories are seen now
    assert both == {"category_buckets": cats["category_buckets"], "extended_buckets": then["extended_buckets"]}
    assert both["category_buckets"] == 2 and both["extended_buckets"] > 0
    for name in ("ratio", "weight"):
        np.testing.assert_array_equal(getattr(nets[0].ngrams, name).data().asnumpy(),
                                      getattr(nets[1].ngrams, name).data().asnumpy())


def test_stacking_weights_are_never_negative_and_shrink_to_the_plain_sum():
    from sklearn.linear_model import LogisticRegression

    net = _net()
    rng = np.random.RandomState(0)

    def reviews(n):
        y = rng.randint(0, 2, n)
        good = (2 * y - 1) * 2.0 + rng.normal(size=n)
        # the second branch is the first plus noise that anti-correlates with the label:
        # a free logistic regression gives it a negative weight
        return np.c_[good, good - 3.0 * (2 * y - 1) + rng.normal(size=n)], y

    x, y = reviews(60)
    assert LogisticRegression(C=1.0, max_iter=1000).fit(x, y).coef_[0, 1] < 0
    mix = net.ngrams.fit_mix(x, y)
    assert mix[1] == 0 and mix[0] > 0
    # two useful branches and few reviews: near the plain sum; many reviews: the data's weights
    few, y_few = reviews(30)
    few[:, 1] = few[:, 0] + rng.normal(size=30)
    free = LogisticRegression(C=1e6, max_iter=5000).fit(few, y_few).coef_[0]
    shrunk = net.ngrams.fit_mix(few, y_few)[:2]
    assert np.abs(shrunk - 1).sum() < np.abs(free - 1).sum()
    many, y_many = reviews(20000)
    many[:, 1] = rng.normal(size=20000)  # an uninformative second branch
    fitted = net.ngrams.fit_mix(many, y_many)
    free = LogisticRegression(C=1e6, max_iter=5000).fit(many, y_many)
    np.testing.assert_allclose(fitted[0], free.coef_[0, 0], rtol=0.02)
    assert fitted[1] < 0.05


def test_a_bundle_reads_its_categorical_columns_when_it_predicts(tmp_path, imdb_slice):
    import pandas as pd

    from xfer.models import with_categorical
    from xfer.surgery import fit_target_ngrams

    frame = imdb_slice.iloc[250:350].assign(label=lambda f: f["label"].eq("pos").astype(int)).reset_index(drop=True)
    frame["Device"] = np.where(frame["label"] == 1, "Mobile", "Desktop")
    pre = fit_preprocessor(build_preprocessor({}), frame)
    vocab = token_vocab(pre).vocabulary_size
    arch = with_categorical({**MODEL, "ngrams": {**MODEL["ngrams"], "buckets": 1 << 16}}, ["Device"])
    net = initialize(build_model(arch, vocab), 0)
    seqs, y = encode_frame(pre, frame, arch), frame["label"].to_numpy()
    net.ngrams.fit_ratios(bags_of(seqs), y)
    fit_target_ngrams(net, seqs, y, frame, arch)
    path = save_bundle(tmp_path / "b", net, pre, arch, vocab, {"0": "neg", "1": "pos"})
    bundle = load_bundle(path)
    assert bundle.model_cfg["architecture"]["ngrams"]["categorical"] == ["Device"]
    np.testing.assert_allclose(bundle.predict_proba(frame), predict_proba(net, seqs), rtol=1e-5, atol=1e-6)
    flipped = frame.assign(Device=np.where(frame["Device"] == "Mobile", "Desktop", "Mobile"))
    assert (bundle.predict_proba(flipped) < bundle.predict_proba(frame))[y == 1].all()  # the column counts
    texts_only = bundle.predict_proba(pd.DataFrame({"text": frame["text"]}))  # no column: no feature
    assert texts_only.shape == (len(frame),) and not np.allclose(texts_only, bundle.predict_proba(frame))
