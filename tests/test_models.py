import mxnet as mx
import numpy as np
import pytest

from xfer.errors import ConfigError
from xfer.models import LAYERS, build_model, featurize, initialize, layer_names, layer_param_counts

ENCODERS = {
    "pool": {"type": "pool", "pooling": ["mean", "max"]},
    "fasttext": {"type": "pool", "pooling": ["mean"], "bigram_buckets": 50},
    "cnn": {"type": "cnn", "widths": [2, 3, 5], "filters": 6},
    "bilstm": {"type": "bilstm", "hidden_size": 5},
    "gru": {"type": "gru", "hidden_size": 5},
}
V = 40


def _net(enc, hybridize=False):
    cfg = {"embedding": {"size": 8, "dropout": 0.3}, "encoder": enc, "hidden": {"size": 7, "dropout": 0.3}}
    net = initialize(build_model(cfg, V), seed=0)
    if hybridize:
        net.hybridize(static_alloc=True)
    return net


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("hybridize", [False, True])
def test_padding_does_not_change_predictions(name, hybridize):
    net = _net(ENCODERS[name], hybridize)
    rng = np.random.RandomState(0)
    seqs = [rng.randint(2, V, size=n) for n in (1, 4, 9)]
    if name == "fasttext":
        seqs = [featurize(s, V, 50) for s in seqs]
    T = max(len(s) for s in seqs) + 6  # extra padding everywhere
    tokens = np.zeros((len(seqs), T))
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    lengths = mx.nd.array([len(s) for s in seqs])
    batched = net(mx.nd.array(tokens), lengths).asnumpy()
    assert batched.shape == (3, 1)
    for i, s in enumerate(seqs):
        alone = net(mx.nd.array(s[None, :]), mx.nd.array([len(s)])).asnumpy()
        np.testing.assert_allclose(batched[i], alone[0], rtol=1e-5, atol=1e-6)
    # a different token in a padded position changes nothing either
    tokens[0, -1] = 7
    np.testing.assert_allclose(net(mx.nd.array(tokens), lengths).asnumpy(), batched, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ENCODERS)
def test_layer_names_outputs_and_counts(name):
    net = _net(ENCODERS[name])
    four = ["embedding", "encoder", "hidden", "output"]  # no n-gram branch configured
    assert layer_names(net) == four
    tokens, lengths = mx.nd.array([[2, 3, 4, 0], [5, 6, 7, 8]]), mx.nd.array([3, 4])
    outs = net.layer_outputs(tokens, lengths)
    assert list(outs) == four
    assert outs["embedding"].shape == (2, 8)
    assert outs["hidden"].shape == (2, 7) and outs["output"].shape == (2, 1)
    assert outs["encoder"].shape[0] == 2
    counts = layer_param_counts(net)
    extra = 50 if name == "fasttext" else 0
    assert counts["embedding"] == (V + extra) * 8
    assert counts["output"] == 7 + 1
    # parameter names start with their layer's name: freezing and surgery select by it
    assert all(k.split("_")[0] in LAYERS for k in net.collect_params()), list(net.collect_params())


def test_bigram_featurize_ids_in_range():
    ids = np.array([2, 3, 4, 3], dtype=np.int32)
    out = featurize(ids, 10, 5)
    assert out[:4].tolist() == ids.tolist() and len(out) == 7
    assert ((out[4:] >= 10) & (out[4:] < 15)).all()
    assert featurize(np.array([2], dtype=np.int32), 10, 5).tolist() == [2]
    assert featurize(ids, 10, 0) is ids


def test_config_errors():
    with pytest.raises(ConfigError, match="model.encoder.type: 'transformer' is not one of pool, cnn"):
        build_model({"encoder": {"type": "transformer"}}, V)
    with pytest.raises(ConfigError, match="bigram"):
        build_model({"encoder": {"type": "cnn", "bigram_buckets": 10}}, V)
    with pytest.raises(ConfigError, match="vocabulary has 1"):
        build_model({}, 1)


def test_same_seed_same_init_and_different_seed_differs():
    a, b = _net(ENCODERS["cnn"]), _net(ENCODERS["cnn"])
    pa = {k: v.data().asnumpy() for k, v in a.collect_params().items()}
    for k, v in b.collect_params().items():
        np.testing.assert_array_equal(pa[k], v.data().asnumpy())
    c = initialize(build_model({"embedding": {"size": 8}, "encoder": ENCODERS["cnn"], "hidden": {"size": 7}}, V), 1)
    assert not np.array_equal(pa["embedding_weight"],
                              c.collect_params()["embedding_weight"].data().asnumpy())


def test_cnn_parameters_can_be_set_after_inference(tmp_path):
    """oneDNN reorders a convolution weight in place (blocked layout) when the net predicts;
    restoring the best epoch afterwards must still work and give that epoch's predictions."""
    from xfer.models import set_param
    from xfer.encode import predict_proba
    from xfer.train import restore, snapshot

    cfg = {"embedding": {"size": 32}, "encoder": {"type": "cnn", "widths": [3, 4, 5], "filters": 16},
           "hidden": {"size": 8}, "output": {"size": 1}}
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, 50, size=rng.integers(1, 60)).astype(np.int32) for _ in range(40)]
    net = initialize(build_model(cfg, 50), 0)
    net.hybridize(static_alloc=True)
    before = predict_proba(net, seqs)
    saved = snapshot(net)
    for p in net.collect_params().values():  # move away from the saved state, after inference
        set_param(p, p.data().asnumpy() * 0.5)
    assert not np.allclose(predict_proba(net, seqs), before)
    restore(net, saved)
    np.testing.assert_allclose(predict_proba(net, seqs), before, rtol=1e-6)
    mx.nd.save(str(tmp_path / "net.params"), snapshot(net))  # what checkpoints and bundles write
    fresh = initialize(build_model(cfg, 50), 1)
    restore(fresh, mx.nd.load(str(tmp_path / "net.params")))
    np.testing.assert_allclose(predict_proba(fresh, seqs), before, rtol=1e-6)


def test_a_hybridized_cnn_leaves_no_input_unused():
    """MXNet warns about a hybridized block input that no computation reads: the CNN encoder
    reads no valid lengths, so the classifier does not hand them to it."""
    import warnings

    import mxnet as mx

    net = initialize(build_model({"embedding": {"size": 16}, "encoder": {"type": "cnn", "filters": 16}}, 50), 0)
    net.hybridize(static_alloc=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = net(mx.nd.array([[2, 3, 4, 0]]), mx.nd.array([3]))
    assert out.shape == (1, 1)
    assert not [w for w in caught if "not used" in str(w.message)], [str(w.message) for w in caught]


def test_operator_threads_changes_no_result_and_restores_the_default():
    """One-review requests run MXNet's operators on one thread (xfer.serving): same numbers."""
    import mxnet as mx

    from xfer.encode import default_operator_threads, operator_threads

    x = mx.nd.random.uniform(shape=(4, 16, 50), ctx=mx.cpu())
    w = mx.nd.random.uniform(shape=(8, 16, 3), ctx=mx.cpu())

    def conv():
        return mx.nd.Convolution(x, w, no_bias=True, kernel=(3,), num_filter=8).asnumpy()

    before = conv()
    with operator_threads(1):
        one = conv()
    after = conv()
    np.testing.assert_allclose(one, before, rtol=1e-5)
    np.testing.assert_array_equal(after, before)
    assert default_operator_threads() >= 1
    with pytest.raises(RuntimeError):  # the default comes back when the block raises too
        with operator_threads(1):
            raise RuntimeError("x")


def test_global_max_has_the_values_and_gradients_of_max_over_time():
    from xfer.models import global_max

    x = mx.nd.array(np.random.RandomState(0).normal(size=(3, 4, 9)))
    head = mx.nd.array(np.random.RandomState(1).normal(size=(3, 4)))
    out = {}
    for name, fn in {"max": lambda v: mx.nd.max(v, axis=2), "global_max": lambda v: global_max(mx.nd, v)}.items():
        v = x.copy()
        v.attach_grad()
        with mx.autograd.record():
            y = fn(v)
        y.backward(head)
        out[name] = (y.asnumpy(), v.grad.asnumpy())
    for got, want in zip(out["global_max"], out["max"]):
        np.testing.assert_array_equal(got, want)
