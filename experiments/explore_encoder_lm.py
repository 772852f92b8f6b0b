"""Would an encoder pretrained on unlabelled text lift the IMDB base? An exploration for issue 14's
optional "an encoder pretrained with a language-model objective", measured before building one.

    python experiments/explore_encoder_lm.py [--seed 0] [--epochs 1] [--max-len 400] [overrides ...]

The objective is the CNN's own: each window of the default encoder's convolutions (widths 3, 4, 5)
predicts the word next to it, the word after a window ending at token i and the word before a
window starting at token i (the region-embedding objective of Johnson & Zhang 2015, "tv-embedding",
read as a language model: no window sees the word it predicts). A window's features are the three
convolutions' ReLU outputs (as the base's max over time reads them); a word is scored by its own
output vector, against negatives drawn from the unigram distribution to the power 0.75 and shared
by a batch (negative sampling, as word2vec). It trains the network's ``embedding`` and ``encoder``
layers on IMDB's 50,000 unlabelled reviews and the base's 22,500 training reviews (never its
validation or test reviews), the first ``--max-len`` tokens of each.

Two arms in one process, one seed: the default ``+experiment=imdb_base`` network from its own
initialisation (``default``), and the same network whose embedding and encoder start from the
pretrained ones (``encoder_lm``); everything else (the n-gram branch, the hidden and output layers,
the training run) is the default's. Besides, the pretrained encoder's own features (ReLU of each
convolution's max over time, before any supervised training) as a fixed input beside the trained
network, as Johnson & Zhang use theirs: a logistic regression on the training reviews' features
gives a third logit, and stacking on the validation reviews compares the default network's two
branches (``stack_2``) with the two plus it (``stack_3``), as explore_docvectors.py does. Tracking off. Writes experiments/results/explore_encoder_lm.json
(provenance, settings, figures with the MLflow metric names).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pandas as pd
from explore_docvectors import parse_base_args, stacked  # beside this script (its directory is on sys.path)
from mxnet import autograd, gluon

from xfer.data import data_dir
from xfer.encode import classification_metrics, context, iter_batches, predict_logits, sigmoid
from xfer.jobs.train import _prepare, fit_and_test
from xfer.models import build_model, initialize
from xfer.tracking import NullTracker
from xfer.train import release_memory, seed_everything
from xfer.transforms import apply_preprocessor

OUT = Path(__file__).resolve().parent / "results" / "explore_encoder_lm.json"


class Pooled(gluon.Block):
    """A review's encoder features: the embedding and encoder layers as the network reads them."""

    def __init__(self, embedding, encoder, **kwargs):
        super().__init__(**kwargs)
        self.embedding, self.encoder = embedding, encoder

    def forward(self, tokens, valid):
        return self.encoder(self.embedding(tokens, valid))


def feature_logits(net, splits, ctx) -> dict[str, np.ndarray]:
    """A logistic regression on the training reviews' encoder features (``net`` as it is): its
    logit for the validation and the test reviews."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    feats = {k: predict_logits(Pooled(net.embedding, net.encoder), [s[0] for s in splits[k][0]], ctx=ctx)
             for k in ("train", "val", "test")}
    scale = StandardScaler().fit(feats["train"])
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(scale.transform(feats["train"]), splits["train"][1])
    return {k: lr.decision_function(scale.transform(feats[k])) for k in ("val", "test")}


class RegionLM(gluon.Block):
    """The network's embedding and CNN encoder with an output vector per word: every window
    scores the word after it (windows ending at token i) and the word before it (windows
    starting at token i)."""

    def __init__(self, embedding, encoder, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.embedding, self.encoder = embedding, encoder
        with self.name_scope():
            self.words = gluon.nn.Embedding(vocab_size, encoder.output_size, sparse_grad=True,
                                            weight_initializer=mx.init.Uniform(0.01), prefix="words_")

    def features(self, tokens, valid):
        """(after, before): (B * (T - 1), features) for the windows that end at tokens 0..T-2
        and for those that start at tokens 1..T-1."""
        t = tokens.shape[1]
        x = mx.nd.transpose(self.embedding(tokens, valid), axes=(0, 2, 1))
        after, before = [], []
        for w, conv in zip(self.encoder.widths, self.encoder.convs):
            h = mx.nd.relu(conv(x))  # output j covers tokens j-w+1..j
            after.append(mx.nd.slice_axis(h, axis=2, begin=0, end=t - 1))
            before.append(mx.nd.slice_axis(h, axis=2, begin=w, end=w + t - 1))
        flat = lambda hs: mx.nd.transpose(mx.nd.concat(*hs, dim=1), axes=(0, 2, 1)).reshape((-3, 0))  # noqa: E731
        return flat(after), flat(before)

    def forward(self, tokens, valid, negatives, k: int):
        t = tokens.shape[1]
        after, before = self.features(tokens, valid)
        next_word = mx.nd.slice_axis(tokens, axis=1, begin=1, end=t).reshape((-1,))
        prev_word = mx.nd.slice_axis(tokens, axis=1, begin=0, end=t - 1).reshape((-1,))
        n = next_word.shape[0]
        rows = self.words(mx.nd.concat(next_word, prev_word, negatives, dim=0))  # one lookup: one sparse gradient
        pos = mx.nd.concat(mx.nd.sum(after * rows[:n], axis=1), mx.nd.sum(before * rows[n:2 * n], axis=1), dim=0)
        neg_rows = rows[2 * n:]
        neg = mx.nd.concat(mx.nd.dot(after, neg_rows, transpose_b=True),
                           mx.nd.dot(before, neg_rows, transpose_b=True), dim=0)
        softplus = lambda z: mx.nd.Activation(z, act_type="softrelu")  # noqa: E731
        loss = softplus(-pos) + k / negatives.shape[0] * mx.nd.sum(softplus(neg), axis=1)
        # position j of "after" predicts token j+1, of "before" token j: both exist when j + 1 < length
        pos_idx = mx.nd.arange(t - 1, ctx=tokens.context).reshape((1, -1))
        mask = (pos_idx + 1 < valid.reshape((-1, 1))).reshape((-1,))
        mask = mx.nd.concat(mask, mask, dim=0)
        return mx.nd.sum(loss * mask) / mx.nd.maximum(mx.nd.sum(mask), 1)


def pretrain_encoder(net, ids: list[np.ndarray], args, ctx) -> dict:
    """Train ``net``'s embedding and encoder with RegionLM; returns its figures."""
    vocab = net.embedding.input_dim
    counts = np.bincount(np.concatenate(ids), minlength=vocab).astype(np.float64)
    counts[0] = 0.0  # <pad>
    noise = counts ** 0.75
    noise /= noise.sum()
    lm = RegionLM(net.embedding, net.encoder, vocab, prefix="regionlm_")
    lm.words.initialize(ctx=ctx)
    trainer = gluon.Trainer(lm.collect_params(), "adam", {"learning_rate": args.lr, "lazy_update": True})
    rng = np.random.RandomState(args.seed)
    tokens_seen, losses, t0 = 0, [], time.perf_counter()
    for epoch in range(args.epochs):
        total, batches = 0.0, 0
        for (tokens, valid), _, _ in iter_batches(ids, None, batch_size=0, shuffle=True, seed=args.seed + epoch,
                                                  ctx=ctx, round_to=16, max_tokens=args.batch_tokens):
            negatives = mx.nd.array(rng.choice(vocab, size=args.negatives, p=noise), ctx=ctx)
            with autograd.record():
                loss = lm(tokens, valid, negatives, args.k)
            loss.backward()
            trainer.step(1)
            total += float(loss.asscalar())
            batches += 1
            tokens_seen += int(valid.sum().asscalar())
            if batches % 200 == 0:
                print(f"pretrain epoch {epoch + 1} batch {batches}: loss {total / batches:.4f} "
                      f"({tokens_seen / (time.perf_counter() - t0):,.0f} tokens/s)", flush=True)
        losses.append(total / max(batches, 1))
        print(f"pretrain epoch {epoch + 1}: loss {losses[-1]:.4f}", flush=True)
    seconds = time.perf_counter() - t0
    return {"pretrain_seconds": seconds, "pretrain_tokens": tokens_seen,
            "pretrain_tokens_per_second": tokens_seen / seconds, "pretrain_loss": losses}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=400, help="tokens of each review the objective reads")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--negatives", type=int, default=256, help="negatives drawn per batch, shared by its windows")
    ap.add_argument("--k", type=int, default=5, help="weight of the negatives: k per window, as word2vec's negative")
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--arms", nargs="+", default=["default", "encoder_lm"], choices=["default", "encoder_lm"])
    args, prov, cfg = parse_base_args(ap, OUT)
    seed_everything(cfg["seed"])
    job = _prepare(cfg)
    ctx = context(cfg["trainer"]["ctx"])
    arms: dict[str, dict] = {}
    labels = {k: job["splits"][k][1] for k in ("val", "test")}
    if "default" in args.arms:
        metrics, _ = fit_and_test(job["net"], job["splits"], cfg["trainer"], cfg["optimizer"], cfg["seed"], NullTracker())
        arms["default"] = metrics
        branches = {k: predict_logits(job["net"], job["splits"][k][0], ctx=ctx)[:, 1:3] for k in ("val", "test")}
    job["net"] = None
    release_memory()
    pretrain: dict = {}
    stacks: dict = {}
    if "encoder_lm" in args.arms:
        seed_everything(cfg["seed"])
        net = initialize(build_model(job["arch"], job["vocab"]), cfg["seed"], ctx=ctx)
        unsup = pd.read_csv(data_dir() / "imdb" / "unsup.csv.gz", nrows=args.unsup)["text"]
        texts = pd.concat([job["ds"].train["text"], unsup], ignore_index=True)
        ids, _ = apply_preprocessor(job["pre"], pd.DataFrame({"text": texts}))
        ids = [np.asarray(s[:args.max_len], dtype=np.int32) for s in ids if len(s) > 1]
        pretrain = {"reviews": len(ids), **pretrain_encoder(net, ids, args, ctx)}
        del ids
        if "default" in args.arms:  # the pretrained features, fixed, beside the default network
            third = feature_logits(net, job["splits"], ctx)
            alone = classification_metrics(labels["test"], sigmoid(third["test"]))
            two = stacked(branches["val"], labels["val"], branches["test"], labels["test"])
            three = stacked(np.c_[branches["val"], third["val"]], labels["val"],
                            np.c_[branches["test"], third["test"]], labels["test"])
            stacks = {"region_features_test_accuracy": alone["accuracy"],
                      "region_features_test_roc_auc": alone["roc_auc"],
                      **{f"{name}_{k}": v for name, r in (("stack_2", two), ("stack_3", three))
                         for k, v in (("test_accuracy", r["accuracy"]), ("test_roc_auc", r["roc_auc"]),
                                      ("weights", r["weights"]))}}
        release_memory()
        seed_everything(cfg["seed"])
        metrics, _ = fit_and_test(net, job["splits"], cfg["trainer"], cfg["optimizer"], cfg["seed"], NullTracker())
        arms["encoder_lm"] = metrics
    record = {**prov, "command": "python experiments/explore_encoder_lm.py " + " ".join(
                  [f"--seed {args.seed}", f"--epochs {args.epochs}", f"--max-len {args.max_len}",
                   *([f"--unsup {args.unsup}"] if args.unsup else []),
                   *([f"--out {args.out}"] if args.out != str(OUT) else []), *args.overrides]),
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "pretrain": pretrain, "arms": arms, "stacks": stacks}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("packages", "machine", "config")}, indent=1))


if __name__ == "__main__":
    main()
