"""Checkpoints and resume: a killed training run continues in the same MLflow run and ends
where an uninterrupted run with the same seed ends."""
import json
import os
import signal
import time

import numpy as np
import pytest

from xfer.errors import ConfigError
from xfer.models import build_model, initialize
from xfer.encode import encode_frame
from xfer.train import fit, read_checkpoint_state
from xfer.transforms import build_preprocessor, fit_preprocessor, token_vocab
from helpers import run_cli

ARCH = {"embedding": {"size": 16, "dropout": 0.3},
        "encoder": {"type": "pool", "pooling": ["mean", "max"], "bigram_buckets": 500},
        "hidden": {"size": 8, "dropout": 0.3}}
TRAINER = {"batch_size": 32, "max_epochs": 4, "patience": 10, "progress": False, "num_buckets": 3}
OPT = {"name": "adam", "lr": 0.01, "lr_schedule": {"type": "cosine"}, "clip_gradient_norm": 1.0}


@pytest.fixture(scope="module")
def data(imdb_slice):
    pre = fit_preprocessor(build_preprocessor({"min_freq": 2}), imdb_slice)
    seqs = encode_frame(pre, imdb_slice, ARCH, 200)
    y = imdb_slice["label"].eq("pos").astype(int).to_numpy()
    idx = np.random.default_rng(0).permutation(len(y))
    tr, va = idx[:450], idx[450:]
    return token_vocab(pre).vocabulary_size, ([seqs[i] for i in tr], y[tr]), ([seqs[i] for i in va], y[va])


def _params(net):
    return {k: p.data().asnumpy() for k, p in net.collect_params().items()}


class Interrupt(Exception):
    pass


def test_resumed_fit_equals_an_uninterrupted_one(data, tmp_path):
    vocab, train, val = data
    ref_net = initialize(build_model(ARCH, vocab), 0)
    ref = fit(ref_net, train, val, TRAINER, OPT, seed=0, checkpoint_dir=tmp_path / "ref")

    def stop_after_second_epoch(path):
        if read_checkpoint_state(path)["epoch"] == 1:
            raise Interrupt()

    net = initialize(build_model(ARCH, vocab), 0)
    with pytest.raises(Interrupt):
        fit(net, train, val, TRAINER, OPT, seed=0, checkpoint_dir=tmp_path / "ck", on_checkpoint=stop_after_second_epoch)
    assert read_checkpoint_state(tmp_path / "ck")["epoch"] == 1
    fresh = initialize(build_model(ARCH, vocab), 0)  # a new process would start from scratch weights
    res = fit(fresh, train, val, TRAINER, OPT, seed=0, resume_from=tmp_path / "ck")
    assert [h["val_roc_auc"] for h in res.history] == [h["val_roc_auc"] for h in ref.history]
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in ref.history]
    assert res.best_epoch == ref.best_epoch
    for k, v in _params(ref_net).items():
        np.testing.assert_array_equal(_params(fresh)[k], v, err_msg=k)


def test_a_corrupt_or_foreign_checkpoint_is_refused(data, tmp_path):
    vocab, train, val = data
    net = initialize(build_model(ARCH, vocab), 0)
    fit(net, train, val, {**TRAINER, "max_epochs": 1}, OPT, seed=0, checkpoint_dir=tmp_path / "ck")
    other = initialize(build_model({**ARCH, "hidden": {"size": 4}}, vocab), 0)
    with pytest.raises(ConfigError, match="do not match the network|has shape"):
        fit(other, train, val, TRAINER, OPT, seed=0, resume_from=tmp_path / "ck")
    with open(tmp_path / "ck" / "net.params", "r+b") as f:
        f.seek(100)
        f.write(b"\0garbage")
    assert read_checkpoint_state(tmp_path / "ck") is None
    with pytest.raises(ConfigError, match="incomplete or corrupt"):
        fit(net, train, val, TRAINER, OPT, seed=0, resume_from=tmp_path / "ck")


JOB = ["+experiment=imdb_base", "model=pool", "data.limit=2500", "trainer.max_epochs=3", "trainer.patience=5",
       "model.encoder.bigram_buckets=20000", "trainer.progress=false", "tracking.log_model=false"]


def _cli(cwd, *overrides, wait=True, job=JOB):
    return run_cli(cwd, *job, *overrides, wait=wait)


def _run(cwd):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, run


@pytest.mark.e2e
def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir()
    dir_.mkdir()
    ref = _cli(ref_dir)
    assert ref.returncode == 0, ref.stderr[-3000:]

    proc = _cli(dir_, wait=False)
    deadline = time.time() + 300
    state = None
    while state is None or state["epoch"] < 0:  # wait until the first epoch's checkpoint is on disk
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        found = list(dir_.glob("outputs/*/*/checkpoint/state.json"))
        state = json.loads(found[0].read_text()) if found else None
        time.sleep(0.05)
    time.sleep(0.4)  # into the second epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    client, run = _run(dir_)
    assert run.info.status == "RUNNING"  # killed: nobody closed it
    done_before = len(client.get_metric_history(run.info.run_id, "val_roc_auc"))
    assert 1 <= done_before < 3

    again = _cli(dir_, f"resume={run.info.run_id}")
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    resumed_after = int(out.split("from its checkpoint after epoch ")[1].split()[0])
    print(f"killed after {done_before} logged epoch(s); resumed after epoch {resumed_after}")
    assert resumed_after >= 1 and done_before - resumed_after <= 1  # lost at most one epoch
    client, resumed = _run(dir_)  # still one run: the same one, now finished
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_roc_auc")]
    assert sorted(set(steps)) == [0, 1, 2]
    _, reference = _run(ref_dir)
    for key in ("test_roc_auc", "test_accuracy", "test_log_loss", "best_val_roc_auc"):
        assert resumed.data.metrics[key] == pytest.approx(reference.data.metrics[key], abs=1e-12), key


@pytest.mark.e2e
def test_resume_errors(tmp_path):
    proc = _cli(tmp_path, "resume=0123456789abcdef0123456789abcdef")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: resume: run 0123456789abcdef0123456789abcdef not found "
                                                    "(or tracking is disabled)")
    one = [*JOB[:3], "trainer.max_epochs=1", *JOB[4:]]
    ok = _cli(tmp_path, job=one)
    assert ok.returncode == 0, ok.stderr[-2000:]
    _, run = _run(tmp_path)
    proc = _cli(tmp_path, f"resume={run.info.run_id}", "seed=1", job=one)
    assert proc.returncode == 2 and "trained another configuration" in proc.stderr
    proc = _cli(tmp_path, f"resume={run.info.run_id}", job=one)
    assert proc.returncode == 2 and f"resume: run {run.info.run_id} already finished" in proc.stderr
