"""Carrying a trained network to a new dataset: vocabulary extension, weight transplant,
the target's architecture and a linear-probe head. Library code: no tracking, no jobs."""
from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import pandas as pd

from .encode import bags_of
from .features import layer_embeddings
from .models import bag_buckets, bag_spec, bigram_buckets, build_model, category_keys, initialize, set_param
from .schema import WEIGHTLESS, section
from .transforms import count_tokens, token_vocab, tokens_of

def extend_preprocessor(base_pre, train_frame: pd.DataFrame, min_freq: int = 2):
    """Copy of the base preprocessor whose vocabulary gains the target's tokens seen at
    least ``min_freq`` times (appended after the base ids, by frequency then spelling)."""
    pre = copy.deepcopy(base_pre)
    t2i = token_vocab(pre)
    itos = list(t2i.vocab_.idx_to_token)
    known = set(itos)
    counts = count_tokens(tokens_of(pre, train_frame["text"]))
    new = sorted((t for t, c in counts.items() if c >= min_freq and t not in known), key=lambda t: (-counts[t], t))
    t2i.with_vocabulary(itos + new)
    return pre, len(new)


def target_architecture(base_arch: Mapping, target_model: Mapping) -> dict:
    """The base architecture with the target model's weightless settings (dropout rates...):
    the transplant is unchanged, the training regime is the target's."""
    arch, target = copy.deepcopy(section("model", base_arch)), section("model", target_model)
    for path in WEIGHTLESS[1:]:
        src, dst = target, arch
        for k in path[:-1]:
            src, dst = (src or {}).get(k), (dst or {}).get(k)
        if isinstance(src, dict) and isinstance(dst, dict) and path[-1] in src and path[-1] in dst:
            dst[path[-1]] = src[path[-1]]
    return arch


def transplant(base, vocab_size: int, hidden: str = "keep", seed: int = 0, ctx=None, arch: Mapping | None = None):
    """A network of the base's architecture (or ``arch``: the same layers, other dropout) for
    ``vocab_size`` tokens, carrying the base's weights: every layer but the (fresh) output, and
    the hidden layer unless ``replace``. Embedding rows of new tokens start at the mean base
    embedding; bigram rows move with the vocabulary offset."""
    arch = arch or base.model_cfg["architecture"]
    old_v, buckets = base.vocab_size, bigram_buckets(arch)
    net = initialize(build_model(arch, vocab_size), seed, ctx=ctx)
    src = base.net.collect_params()
    for name, p in net.collect_params().items():
        layer = name.split("_")[0]
        if layer == "output" or (layer == "hidden" and hidden == "replace"):
            continue
        w = src[name].data().asnumpy()
        if name == "embedding_weight" and vocab_size != old_v:
            new = np.empty((vocab_size + buckets, w.shape[1]), dtype=w.dtype)
            new[:old_v] = w[:old_v]
            new[old_v:vocab_size] = w[2:old_v].mean(axis=0)
            new[vocab_size:] = w[old_v:]
            w = new
        set_param(p, w)
    return net


def fit_target_ngrams(net, seqs, labels, frame: pd.DataFrame, arch: Mapping, extend: bool = False) -> dict[str, int]:
    """Give a transferred n-gram branch what it cannot learn from the base: the target's
    naive-Bayes log-count ratios (from the training reviews ``seqs``/``labels``, fitted once)
    and weight 1 (the naive-Bayes log-odds; training moves it) in

    - the buckets of the target's categorical values (``model.ngrams.categorical``): the base
      never saw them, so they hold the ratios and weights of whatever base n-grams hash there;
    - with ``extend`` (``transfer.ngrams=extend``), the buckets of the target's n-grams the base
      never saw: their ratio is 0, so the branch cannot use them however it trains, while a
      network trained on the target from scratch fits them. Buckets the base saw keep its ratio
      and weight.

    Returns how many buckets each set holds (``category_buckets``, and ``extended_buckets``
    with ``extend``); all 0 without an n-gram branch."""
    counts = {"category_buckets": 0, **({"extended_buckets": 0} if extend else {})}
    if getattr(net, "ngrams", None) is None or not len(seqs):
        return counts
    spec = bag_spec(arch)
    cats = np.zeros(0, dtype=np.int64)
    if spec and spec["columns"] and len(frame):
        cats = np.unique(bag_buckets(np.concatenate(category_keys(frame, spec["columns"])), spec["buckets"]))
    new = np.zeros(0, dtype=np.int64)
    if extend:
        seen = np.unique(np.concatenate(bags_of(seqs)))
        ratio = net.ngrams.ratio.data().asnumpy()[:, 0]
        new = np.setdiff1d(seen[(seen != 0) & (ratio[seen] == 0)], cats)
        counts["extended_buckets"] = len(new)
    counts["category_buckets"] = len(cats)
    only = np.union1d(cats, new)
    if len(only):
        net.ngrams.fit_ratios(bags_of(seqs), labels, only=only)
        weight = net.ngrams.weight.data().asnumpy()
        weight[only] = 1.0
        set_param(net.ngrams.weight, weight)
    return counts


def probe_init(net, seqs, labels, C: float = 1.0, seed: int = 0) -> float:
    """Initialise the fresh output layer by logistic regression on the hidden layer's
    outputs over the training reviews (a linear probe, as in LP-FT: Kumar et al., 2022).

    A randomly initialised head on strong transferred features starts with a random sign;
    with a few hundred examples the first epochs cannot fix that, and early stopping may
    even keep it. Returns the probe's training accuracy."""
    from sklearn.linear_model import LogisticRegression

    feats = layer_embeddings(net, seqs, "hidden")
    if len(np.unique(labels)) < 2:
        return float("nan")
    probe = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(feats, labels)
    set_param(net.output.weight, probe.coef_.astype(np.float32))
    set_param(net.output.bias, probe.intercept_.astype(np.float32))
    return float(probe.score(feats, labels))
