import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from xfer.errors import ConfigError
from xfer.freeze import Schedule, freeze, make_schedule, select_params, set_lr_mult, trainable_report, unfreeze
from xfer.models import build_model, initialize
from xfer.train import make_trainer

CFG = {"embedding": {"size": 6, "sparse_grad": True}, "encoder": {"type": "cnn", "widths": [2], "filters": 4},
       "hidden": {"size": 5}}


def _net(hybridize=True):
    net = initialize(build_model(CFG, 30), 0)
    if hybridize:
        net.hybridize(static_alloc=True)
    return net


def _state(net):
    return {k: p.data().asnumpy().copy() for k, p in net.collect_params().items()}


def _step(net, trainer):
    x, L = mx.nd.array([[2, 3, 4, 5], [6, 7, 0, 0]]), mx.nd.array([4, 2])
    y = mx.nd.array([1, 0])
    with autograd.record():
        loss = gluon.loss.SigmoidBinaryCrossEntropyLoss()(net(x, L)[:, 0], y)
    loss.backward()
    trainer.step(2)


def _changed(before, net):
    return {k for k, p in net.collect_params().items() if not np.array_equal(before[k], p.data().asnumpy())}


@pytest.mark.parametrize("hybridize", [False, True])
def test_freeze_stops_updates_and_unfreeze_restarts_them(hybridize):
    net = _net(hybridize)
    trainer = make_trainer(net, {"name": "sgd", "lr": 0.5, "momentum": 0.0}, 10)
    frozen = freeze(net, ["embedding", "encoder"])
    assert frozen == ["embedding_weight", "encoder_conv2_weight"]  # the convolutions have no bias
    before = _state(net)
    _step(net, trainer)
    changed = _changed(before, net)
    assert changed and not any(k.startswith(("embedding", "encoder")) for k in changed)
    assert {"hidden_dense_weight", "output_weight"} <= changed
    unfreeze(net, "enc*")
    before = _state(net)
    _step(net, trainer)
    changed = _changed(before, net)
    assert "encoder_conv2_weight" in changed and "embedding_weight" not in changed


def test_patterns_glob_regex_and_no_match():
    net = _net()
    assert set(select_params(net, "re:^hidden_")) == {"hidden_dense_weight", "hidden_dense_bias"}
    assert set(select_params(net, "*_bias")) == {"hidden_dense_bias", "output_bias"}
    assert set(select_params(net, "output")) == {"output_weight", "output_bias"}
    with pytest.raises(ConfigError, match="matches no layer"):
        freeze(net, "decoder")


def test_trainable_report_counts():
    net = _net()
    freeze(net, "embedding")
    rep = trainable_report(net)
    assert rep["embedding"] == {"trainable": 0, "frozen": 30 * 6}
    assert rep["output"] == {"trainable": 6, "frozen": 0}


def test_gradual_schedule_unfreezes_top_down():
    net = _net()
    s = Schedule("gradual", unfreeze_every=1)
    order = [s.apply(net, e) for e in range(5)]
    # the head, then one layer group more per epoch, from the top down
    assert order == [["output"], ["output", "hidden"], ["output", "hidden", "encoder"],
                     ["output", "hidden", "encoder", "embedding"], ["output", "hidden", "encoder", "embedding"]]
    assert [p.grad_req for p in net.embedding.collect_params().values()] == ["write"]
    s2 = make_schedule({"name": "gradual", "unfreeze_every": 2}, hidden_replaced=True)
    assert [s2.trainable_at(net, e) for e in (0, 1, 2)] == [["hidden", "output"], ["hidden", "output"],
                                                            ["hidden", "output", "encoder"]]
    assert Schedule("frozen").trainable_at(net, 7) == ["output"]
    with pytest.raises(ConfigError, match="unknown schedule"):
        Schedule("warp")


def test_discriminative_learning_rates_are_applied():
    net = _net()
    s = Schedule("discriminative", decay=0.5)
    assert s.lr_mults(net) == {"output": 1.0, "hidden": 0.5, "encoder": 0.25, "embedding": 0.125}
    set_lr_mult(net, s.lr_mults(net))
    s.apply(net, 0)
    # with plain SGD the step is lr * lr_mult * grad: compare against a copy trained at lr_mult 1
    ref = _net()
    t1 = make_trainer(net, {"name": "sgd", "lr": 0.1, "momentum": 0.0}, 10)
    t2 = make_trainer(ref, {"name": "sgd", "lr": 0.1, "momentum": 0.0}, 10)
    b1, b2 = _state(net), _state(ref)
    _step(net, t1)
    _step(ref, t2)
    for name, mult in (("hidden_dense_weight", 0.5), ("encoder_conv2_weight", 0.25), ("output_weight", 1.0)):
        d1 = net.collect_params()[name].data().asnumpy() - b1[name]
        d2 = ref.collect_params()[name].data().asnumpy() - b2[name]
        np.testing.assert_allclose(d1, mult * d2, rtol=1e-4, atol=1e-7)
