"""The one-way data path shared by training, serving, embedding extraction and bundles:
a raw frame -> token ids (the fitted preprocessor) -> the network's inputs (truncated ids,
hashed n-gram ids, n-gram bags) -> length-bucketed batches (gluonnlp ``FixedBucketSampler`` +
``Pad``) -> logits, probabilities and metrics. Nothing here trains or tracks.
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from .errors import ConfigError
from .models import bag_spec, category_keys, featurize, ngram_bag, ngram_spec
from .transforms import UNK_ID, apply_preprocessor, token_vocab


# --------------------------------------------------------------------------- data
def prepare_sequences(ids: Sequence[np.ndarray], max_len: int | None = None, vocab_size: int = 0,
                      bigram_buckets: int = 0, truncate: str = "head", ngrams: int = 2,
                      unique: bool = False, bag: Mapping | None = None,
                      extra: Sequence[np.ndarray] | None = None) -> list:
    """Truncate to ``max_len`` tokens, give empty reviews one ``<unk>``, add hashed n-gram ids.

    With ``bag`` (``models.bag_spec``) every review becomes a pair (ids, n-gram bag); the
    bag is taken from the whole review, before truncation, and holds the review's ``extra``
    keys (its categorical values, ``models.category_keys``)."""
    out = []
    for i, seq in enumerate(ids):
        seq = full = np.asarray(seq, dtype=np.int32)
        if max_len and len(seq) > max_len:
            seq = seq[-max_len:] if truncate == "tail" else seq[:max_len]
        if len(seq) == 0:
            seq = full = np.array([UNK_ID], dtype=np.int32)
        seq = featurize(seq, vocab_size, bigram_buckets, ngrams, unique)
        out.append((seq, ngram_bag(full, bag["buckets"], bag["n"], extra[i] if extra else None)) if bag else seq)
    return out


def encode_frame(pre, frame, arch: Mapping, max_len: int | None = None, truncate: str = "head") -> list:
    """Raw frame -> the inputs that the network ``arch`` reads, one per review: an id
    array, or (ids, n-gram bag) for a network with an ``ngrams`` branch (whose bag also holds
    the frame's values of the branch's categorical columns)."""
    ids, _ = apply_preprocessor(pre, frame)
    spec, bag = ngram_spec(arch), bag_spec(arch)
    extra = category_keys(frame, bag["columns"]) if bag and bag["columns"] else None
    return prepare_sequences(ids, max_len, token_vocab(pre).vocabulary_size, spec["buckets"], truncate,
                             spec["ngrams"], spec["unique"], bag=bag, extra=extra)


def bags_of(seqs: Sequence) -> list[np.ndarray] | None:
    """The n-gram bags of ``encode_frame``'s output, or None if it has none."""
    return [s[1] for s in seqs] if len(seqs) and isinstance(seqs[0], tuple) else None


def default_operator_threads() -> int:
    """The OpenMP thread count MXNet's CPU operators use by default in this process."""
    import os

    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))


@contextmanager
def operator_threads(n: int | None) -> Iterator[None]:
    """MXNet's CPU operators on ``n`` OpenMP threads inside the block (None: unchanged), then
    back to the process default. A request of one or a few reviews is milliseconds of work: on a
    small machine handing it to several threads, which compete with the server and its clients
    for the same cores, costs more than it saves (``experiments/bench_serving.py``)."""
    if n is None or n == default_operator_threads():
        yield
        return
    import ctypes

    mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(n))
    try:
        yield
    finally:
        mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(default_operator_threads()))


def context(name: str | None) -> mx.Context:
    """``cpu``, ``gpu`` or ``gpu:1`` -> an MXNet context."""
    name = (name or "cpu").lower()
    if name == "cpu":
        return mx.cpu()
    if name.startswith("gpu"):
        idx = int(name.split(":")[1]) if ":" in name else 0
        return mx.gpu(idx)
    raise ConfigError(f"trainer.ctx: unknown device {name!r} (cpu | gpu | gpu:N)")


#: inference pads a batch of many reviews to a multiple of this many tokens (little padding: the
#: convolutions' work grows with the padded length) ...
INFERENCE_ROUND_TO = 16
#: ... and a batch of a few reviews (a serving request) to a multiple of this: oneDNN compiles a
#: kernel per input shape, so single reviews of every length would each pay a compilation
#: (``Bundle.warm_up`` compiles these shapes once). Padding never changes a prediction (models.py).
REQUEST_ROUND_TO = 32
#: a batch of at most this many reviews is a request
REQUEST_ROWS = 16
#: with a fixed ``batch_size`` inference groups reviews of about equal length into this many
#: buckets (gluonnlp's FixedBucketSampler): more buckets than training's 10, so less padding
INFERENCE_BUCKETS = 60
#: inference batches hold about this many tokens (``use_average_length``): many short reviews or a
#: few long ones, so activation memory is bounded by tokens, not by reviews (256 whole IMDB reviews
#: of 1,000 tokens took ~0.5 GB of activations)
INFERENCE_TOKENS = 32768
#: batches dispatched to MXNet's engine ahead of the one being read
PENDING_BATCHES = 2


def iter_batches(seqs: Sequence, labels: np.ndarray | None, batch_size: int,
                 num_buckets: int = 10, shuffle: bool = False, seed: int = 0,
                 ctx: mx.Context | None = None, round_to: int | None = None,
                 max_tokens: int | None = None) -> Iterator[tuple]:
    """Length-bucketed batches: (inputs, labels or None, indices), where ``inputs`` is what
    the network takes: (tokens, valid_length), plus the padded n-gram bags when the
    reviews are (ids, bag) pairs. With ``round_to`` the padded length is a multiple of it; with
    ``max_tokens`` a batch holds about that many tokens instead of ``batch_size`` reviews."""
    import gluonnlp as nlp

    if len(seqs) == 0:
        return
    bags = bags_of(seqs)
    if bags is not None:
        seqs = [s[0] for s in seqs]
    lengths = [len(s) for s in seqs]
    buckets = max(1, min(num_buckets, len(set(lengths))))
    if max_tokens and not shuffle:
        sampler = sorted_batches(lengths, round_to or 1, max_tokens)
    else:
        with warnings.catch_warnings():  # "Some buckets are empty": expected for short inputs
            warnings.simplefilter("ignore", UserWarning)
            sampler = nlp.data.FixedBucketSampler(lengths, batch_size=max_tokens or batch_size, num_buckets=buckets,
                                                  shuffle=shuffle, use_average_length=bool(max_tokens))
    pad = nlp.data.batchify.Pad(axis=0, pad_val=0, ret_length=True, dtype="float32", round_to=round_to)
    pad_bag = nlp.data.batchify.Pad(axis=0, pad_val=0, dtype="float32", round_to=round_to and 4 * round_to)
    ctx = ctx or mx.cpu()
    if shuffle:
        np.random.seed(seed)  # FixedBucketSampler shuffles with numpy's global generator
    for idx in sampler:
        idx = np.asarray(idx)
        tokens, valid = pad([seqs[i] for i in idx])
        inputs = (tokens.as_in_context(ctx), valid.astype("float32").as_in_context(ctx))
        if bags is not None:
            inputs += (pad_bag([bags[i] for i in idx]).as_in_context(ctx),)
        y = mx.nd.array(labels[idx], ctx=ctx, dtype="float32") if labels is not None else None
        yield inputs, y, idx


def sorted_batches(lengths: Sequence[int], round_to: int, max_tokens: int) -> list[np.ndarray]:
    """Inference batches with few distinct shapes: reviews sorted by length, longest first; each
    batch takes the longest remaining review, pads to its length rounded up to ``round_to`` (T)
    and holds ``max_tokens // T`` reviews. Shapes then depend on T alone (and one last partial
    batch), so a process compiles each of oneDNN's convolution kernels once, not once per
    batch of new data, and sorted neighbours need little padding."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    out, start = [], 0
    while start < len(order):
        t = -(-max(int(lengths[order[start]]), 1) // round_to) * round_to
        size = max(1, max_tokens // t)
        out.append(order[start:start + size])
        start += size
    return out


# --------------------------------------------------------------------------- metrics
def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC, accuracy, F1 and log loss of probabilities ``p`` for 0/1 labels ``y``."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def auc_standard_error(auc: float, n_positive: int, n_negative: int) -> float:
    """Standard error of a ROC-AUC measured on ``n_positive`` + ``n_negative`` reviews (Hanley &
    McNeil 1982): about 0.03 for an AUC of 0.95 on 50 reviews (34 positive), 0.003 for 0.98 on 2,500."""
    if n_positive < 1 or n_negative < 1 or not math.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) \
        / (n_positive * n_negative)
    return math.sqrt(max(var, 0.0))


def predict_logits(net: gluon.HybridBlock, seqs: Sequence, batch_size: int | None = None,
                   ctx: mx.Context | None = None, num_buckets: int | None = None) -> np.ndarray:
    """The network's output columns (N, k) for every review, in input order; batches of
    ``batch_size`` reviews, or (None) of about ``INFERENCE_TOKENS`` tokens. Every batch is
    dispatched before the result of the one ``PENDING_BATCHES`` earlier is read, so MXNet computes
    while Python pads the next ones (and at most that many batches' inputs wait in memory)."""
    pending: deque = deque()
    out: np.ndarray | None = None
    for inputs, _, idx in inference_batches(seqs, batch_size, ctx, num_buckets):
        pending.append((net(*inputs), idx))
        while len(pending) > PENDING_BATCHES:
            out = _collect(out, len(seqs), *pending.popleft())
    while pending:
        out = _collect(out, len(seqs), *pending.popleft())
    return out if out is not None else np.zeros((0, 1))


def inference_batches(seqs: Sequence, batch_size: int | None = None, ctx: mx.Context | None = None,
                      num_buckets: int | None = None) -> Iterator[tuple]:
    """``iter_batches`` as inference uses it: batches of about ``INFERENCE_TOKENS`` tokens (or of
    ``batch_size`` reviews), padded to ``INFERENCE_ROUND_TO``, or to ``REQUEST_ROUND_TO`` for a
    request of a few reviews."""
    request = len(seqs) <= REQUEST_ROWS
    return iter_batches(seqs, None, batch_size or 0, num_buckets or INFERENCE_BUCKETS, ctx=ctx,
                        round_to=REQUEST_ROUND_TO if request else INFERENCE_ROUND_TO,
                        max_tokens=None if batch_size else INFERENCE_TOKENS)


def _collect(out: np.ndarray | None, n: int, logits: mx.nd.NDArray, idx: np.ndarray) -> np.ndarray:
    logits = logits.asnumpy()
    if out is None:
        out = np.zeros((n, logits.shape[1]), dtype=np.float64)
    out[idx] = logits
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def predict_proba(net: gluon.HybridBlock, seqs: Sequence, batch_size: int | None = None,
                  ctx: mx.Context | None = None, num_buckets: int | None = None) -> np.ndarray:
    """Positive-class probability for every review, in input order."""
    return sigmoid(predict_logits(net, seqs, batch_size, ctx, num_buckets)[:, 0])


