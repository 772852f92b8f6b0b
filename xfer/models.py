"""Gluon text classifiers assembled from ``conf/model/*.yaml``.

Every network is ``embedding -> encoder -> hidden -> output`` with those four
stable child names, so freezing, extraction and surgery can address layers by
name. The forward pass takes ``(tokens, valid_length)``; padding is masked
(zeroed embeddings, masked pooling, RNN sequence lengths; the CNN needs no mask,
see CNNEncoder), so the amount of padding in a batch never changes a prediction.

A model may add a second branch, ``ngrams`` (``model.ngrams`` in the config): a
bag of hashed word n-grams with naive-Bayes feature weights (NBSVM), whose logit
is added to the output's. It reads a third input, the review's n-gram bag.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn, rnn

from .errors import ConfigError
from .schema import section

#: input to output; ``ngrams`` is a parallel branch into the logit, ordered just below ``output``
#: (a gradual schedule unfreezes it first, a discriminative one gives it the second-highest rate)
LAYERS = ("embedding", "encoder", "hidden", "ngrams", "output")
ENCODER_TYPES = ("pool", "cnn", "bilstm", "lstm", "gru", "bigru")
NEG_INF = -1e9
#: bumped whenever the same config builds a different network (2: bias-free CNN, max then ReLU;
#: 3: n-gram bags hashed through a 64-bit mixer, see ngram_bag); part of a base's fingerprint,
#: so a store never reuses a base trained by older code
ARCHITECTURE_REVISION = 3
BIGRAM_PRIME = 1_000_003


def global_max(F, x):
    """Max over the last axis of ``x`` (B, C, T) -> (B, C), as oneDNN's global max pooling:
    the same values and gradients as ``F.max(x, axis=2)``, which MXNet's CPU reduction
    computes several times slower (it took as long as the convolutions before it)."""
    return F.reshape(F.Pooling(x, pool_type="max", global_pool=True), (0, -1))


def masked_pool(F, x, valid_length, pooling=("mean", "max")):
    """Pool ``x`` (B, T, C) over its valid time steps -> (B, C * len(pooling)).

    MXNet's CPU reductions over a middle axis are slow, so the mean is a batched
    matrix product with the (B, 1, T) weights ``mask / length`` and the max
    pools the transposed input (``global_max``).
    """
    outs = []
    if "mean" in pooling:
        ones = F.ones_like(F.slice_axis(x, axis=2, begin=0, end=1))  # (B, T, 1)
        mask = F.SequenceMask(ones, sequence_length=valid_length, use_sequence_length=True, axis=1, value=0.0)
        weights = F.broadcast_div(F.transpose(mask, axes=(0, 2, 1)), F.reshape(valid_length, (-1, 1, 1)))
        outs.append(F.reshape(F.batch_dot(weights, x), (0, -1)))
    if "max" in pooling:
        floored = F.SequenceMask(x, sequence_length=valid_length, use_sequence_length=True, axis=1,
                                 value=NEG_INF)
        outs.append(global_max(F, F.transpose(floored, axes=(0, 2, 1))))
    return outs[0] if len(outs) == 1 else F.concat(*outs, dim=1)


def masked_mean_max(F, x, valid_length):
    """Mean and max over the valid time steps of ``x`` (B, T, C) -> (B, 2C)."""
    return masked_pool(F, x, valid_length, ("mean", "max"))


class EmbeddingLayer(HybridBlock):
    """Token embedding with dropout; padded positions come out as zeros."""

    def __init__(self, input_dim: int, size: int, dropout: float = 0.0, sparse_grad: bool = False,
                 init_scale: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.size = input_dim, size
        scale = init_scale if init_scale is not None else 1.0 / size ** 0.5
        with self.name_scope():
            self.embed = nn.Embedding(input_dim, size, sparse_grad=sparse_grad,
                                      weight_initializer=mx.init.Uniform(scale), prefix="")
            self.drop = nn.Dropout(dropout) if dropout else None

    def hybrid_forward(self, F, tokens, valid_length):
        e = self.embed(tokens)
        if self.drop is not None:
            e = self.drop(e)
        return F.SequenceMask(e, sequence_length=valid_length, use_sequence_length=True, axis=1, value=0.0)


class PoolEncoder(HybridBlock):
    """Mean and/or max over tokens; with bigram ids appended to the input and mean
    pooling alone this is fastText (Joulin et al., 2016)."""

    def __init__(self, input_size: int, pooling=("mean", "max"), **kwargs):
        super().__init__(**kwargs)
        self.pooling = tuple(pooling)
        if not self.pooling or set(self.pooling) - {"mean", "max"}:
            raise ConfigError(f"model.encoder.pooling: {list(pooling)} must be a non-empty subset of [mean, max]")
        self.output_size = len(self.pooling) * input_size

    def hybrid_forward(self, F, x, valid_length):
        return masked_pool(F, x, valid_length, self.pooling)


class CNNEncoder(HybridBlock):
    """Parallel 1-D convolutions of several widths, max over time, ReLU (Kim, 2014).

    Each convolution pads ``width - 1`` on both sides, so a review shorter than
    the width still has windows. The convolutions have no bias: padded positions
    are zero embeddings, so a window lying wholly in padding gives exactly 0, and
    ``relu(max over windows)`` (the same as the max of the ReLU outputs) cannot
    be changed by such windows: padding needs no mask. The per-filter offset
    lives in the next layer's bias. Against masking and a biased convolution this
    trains about 10 % faster on CPU (experiments/README.md).
    """

    #: reads no valid lengths: TextClassifier does not pass them (an unused input of a
    #: hybridized block is a warning in MXNet)
    uses_length = False

    def __init__(self, input_size: int, widths=(3, 4, 5), filters: int = 96, **kwargs):
        super().__init__(**kwargs)
        self.widths = tuple(int(w) for w in widths)
        self.output_size = filters * len(self.widths)
        with self.name_scope():
            self.convs = nn.HybridSequential(prefix="")
            for w in self.widths:
                self.convs.add(nn.Conv1D(filters, w, padding=w - 1, layout="NCW", in_channels=input_size,
                                         use_bias=False, prefix=f"conv{w}_"))

    def hybrid_forward(self, F, x):
        xc = F.transpose(x, axes=(0, 2, 1))  # (B, E, T)
        pooled = [F.relu(global_max(F, conv(xc))) for conv in self.convs]  # = max of ReLU, on (B, C) only
        return F.concat(*pooled, dim=1)


class RNNEncoder(HybridBlock):
    """(Bi)LSTM or (Bi)GRU over valid lengths, then mean + max over time.

    The LSTM uses the fused kernel's ``sequence_length``. MXNet 1.9's GRU layer
    cannot take ``sequence_length`` when hybridized (it binds it to the missing
    cell state), so the GRU's backward direction is a second GRU run over each
    review reversed within its own length (``SequenceReverse``).
    """

    def __init__(self, input_size: int, cell: str = "lstm", hidden_size: int = 128, num_layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.cell, self.bidirectional = cell, bidirectional
        self.output_size = 2 * hidden_size * (2 if bidirectional else 1)
        with self.name_scope():
            if cell == "lstm":
                self.rnn = rnn.LSTM(hidden_size, num_layers=num_layers, layout="NTC",
                                    bidirectional=bidirectional, dropout=dropout, input_size=input_size,
                                    use_sequence_length=True, prefix="rnn_")
            elif cell == "gru":
                self.rnn = rnn.GRU(hidden_size, num_layers=num_layers, layout="TNC", dropout=dropout,
                                   input_size=input_size, prefix="rnn_")
                self.rnn_back = rnn.GRU(hidden_size, num_layers=num_layers, layout="TNC", dropout=dropout,
                                        input_size=input_size, prefix="rnn_back_") if bidirectional else None
            else:
                raise ConfigError(f"model.encoder: unknown recurrent cell {cell!r} (lstm | gru)")

    def hybrid_forward(self, F, x, valid_length):
        if self.cell == "lstm":
            h = self.rnn(x, sequence_length=valid_length)
        else:
            xt = F.transpose(x, axes=(1, 0, 2))  # (T, B, E)
            h = self.rnn(xt)
            if self.rnn_back is not None:
                rev = F.SequenceReverse(xt, sequence_length=valid_length, use_sequence_length=True)
                hb = F.SequenceReverse(self.rnn_back(rev), sequence_length=valid_length,
                                       use_sequence_length=True)
                h = F.concat(h, hb, dim=2)
            h = F.transpose(h, axes=(1, 0, 2))
        return masked_mean_max(F, h, valid_length)


class HiddenLayer(HybridBlock):
    def __init__(self, input_size: int, size: int, dropout: float = 0.0, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.size = size
        with self.name_scope():
            self.dense = nn.Dense(size, activation=activation, in_units=input_size, prefix="dense_")
            self.drop = nn.Dropout(dropout) if dropout else None

    def hybrid_forward(self, F, x):
        h = self.dense(x)
        return self.drop(h) if self.drop is not None else h


class NgramBag(HybridBlock):
    """A linear model on a binarized bag of hashed word n-grams with naive-Bayes feature
    scaling: logit = sum over the review's distinct n-grams i of ``weight_i * ratio_i``,
    where ``ratio`` holds the log-count ratios of the training set (NBSVM: Wang & Manning,
    2012; as a network: Howard's NB-weighted logistic regression).

    ``ratio`` is estimated once from the training reviews (``fit_ratios``) and never
    trained (a non-differentiable parameter: freezing schedules cannot turn it on). Index 0
    is padding; its ratio is 0, so padding cannot change the logit.

    The block also combines its logit with the encoder path's: prediction =
    ``mix[0] * encoder logit + mix[1] * n-gram logit + mix[2]``. ``mix`` starts as a plain
    sum and is fitted on held-out reviews (``fit_mix``, stacking), never by gradient.
    """

    def __init__(self, buckets: int, init_scale: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.buckets = int(buckets)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(self.buckets + 1, 1),
                                          init=mx.init.Uniform(init_scale), grad_stype="row_sparse")
            self.ratio = self.params.get("ratio", shape=(self.buckets + 1, 1), init="zeros",
                                         differentiable=False)
            self.mix = self.params.get("mix", shape=(1, 3), init=mx.init.Constant(np.array([[1.0, 1.0, 0.0]], dtype=np.float32)),
                                       differentiable=False)

    def hybrid_forward(self, F, bag, logit, weight, ratio, mix):
        """(n-gram bags (B, M), encoder logits (B, 1)) -> (B, 3): prediction, encoder logit,
        n-gram logit."""
        w = F.Embedding(bag, weight, input_dim=self.buckets + 1, output_dim=1, sparse_grad=True)
        r = F.Embedding(bag, ratio, input_dim=self.buckets + 1, output_dim=1)
        nb = F.sum(w * r, axis=1)  # (B, 1)
        both = F.concat(logit, nb, F.ones_like(nb), dim=1)
        return F.concat(F.sum(F.broadcast_mul(both, mix), axis=1, keepdims=True), logit, nb, dim=1)

    def fitted(self) -> bool:
        return bool(mx.nd.abs(self.ratio.data()).max().asscalar() > 0)

    def fit_ratios(self, bags: Sequence[np.ndarray], labels: np.ndarray, alpha: float = 1.0,
                   only: np.ndarray | None = None) -> None:
        """Set ``ratio`` to the smoothed log-count ratios of positive vs negative reviews
        (each n-gram counted once per review; ``alpha`` added to every bucket's count);
        n-grams never seen, and padding, get 0. Works on the seen buckets only, so its
        memory does not grow with ``buckets`` beyond the one float32 result. With ``only``
        (bucket indices) just those buckets change."""
        labels = np.asarray(labels).astype(int)
        size = self.buckets + 1
        counted = {}
        for cls in (0, 1):
            chosen = [b for b, y in zip(bags, labels) if y == cls]
            flat = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int32)
            counted[cls] = np.unique(flat, return_counts=True)
        seen = np.union1d(counted[0][0], counted[1][0])

        def log_share(cls):  # log((count + alpha) / sum over all buckets of (count + alpha))
            ids, n = counted[cls]
            at = np.zeros(len(seen))
            at[np.searchsorted(seen, ids)] = n
            return np.log(at + alpha) - np.log(n.sum() + alpha * size)

        r = np.zeros((size, 1), dtype=np.float32)
        r[seen, 0] = log_share(1) - log_share(0)
        r[0] = 0.0
        if only is not None:
            fitted, only = r, np.asarray(only, dtype=np.int64)
            r = self.ratio.data().asnumpy()
            r[only] = fitted[only]
        set_param(self.ratio, r)

    def fit_mix(self, branch_logits: np.ndarray, labels: np.ndarray, C: float = 1.0) -> np.ndarray | None:
        """Fit ``mix`` by logistic regression of ``labels`` on the two branches' logits
        (N, 2) of reviews the branches were not trained on; returns the new ``mix``, or
        None (unchanged) when the labels hold one class only.

        The regression is L2-penalised towards the plain sum (weights 1, 1), not towards 0,
        and its weights are kept non-negative (Breiman's constraint for stacking, 1996):
        both branches predict the same label, each calibrated on its own, so with a few
        hundred validation reviews the fit stays near their sum instead of fitting noise
        (a free fit on 50 reviews weighted one branch negatively and made the stack worse
        than either branch); with thousands the data decide. Objective as scikit-learn's:
        ``C * sum(log loss) + ||w - 1||^2 / 2``, the intercept unpenalised."""
        from scipy.optimize import minimize

        y = np.asarray(labels).astype(int)
        if len(np.unique(y)) < 2:
            return None
        x = np.asarray(branch_logits, dtype=np.float64)
        sign = 2.0 * y - 1.0
        prior = np.ones(x.shape[1])

        def objective(theta):
            w, b = theta[:-1], theta[-1]
            z = sign * (x @ w + b)
            loss = np.logaddexp(0.0, -z)  # log(1 + exp(-z)), stable
            g = -sign / (1.0 + np.exp(np.clip(z, -500, 500)))  # d loss / d (x @ w + b)
            diff = w - prior
            return (C * loss.sum() + 0.5 * diff @ diff,
                    np.append(C * (x.T @ g) + diff, C * g.sum()))

        theta = minimize(objective, np.append(prior, 0.0), jac=True, method="L-BFGS-B",
                         bounds=[(0.0, None)] * x.shape[1] + [(None, None)]).x
        mix = np.array([theta], dtype=np.float32)
        set_param(self.mix, mix)
        return mix[0]

    def combine(self, branch_logits: np.ndarray) -> np.ndarray:
        """The prediction column for (N, 2) branch logits under the current ``mix`` (in
        numpy: what ``hybrid_forward`` computes, without another pass over the reviews)."""
        mix = self.mix.data().asnumpy()[0].astype(np.float64)
        return np.asarray(branch_logits, dtype=np.float64) @ mix[:2] + mix[2]


class TextClassifier(HybridBlock):
    """``embedding -> encoder -> hidden -> output`` (+ the optional ``ngrams`` branch).

    Returns logits (B, 1). With ``ngrams`` it returns (B, 3): the prediction (the two
    branches' logits combined by ``ngrams.mix``), then each branch's own logit. Training
    fits each branch to the labels on its own (``loss_columns``): trained jointly on their
    sum, the n-gram bag fits the training set within an epoch and the encoder stops learning.
    """

    def __init__(self, embedding: HybridBlock, encoder: HybridBlock, hidden: HybridBlock,
                 output: HybridBlock, ngrams: NgramBag | None = None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.embedding = embedding
            self.encoder = encoder
            self.hidden = hidden
            self.output = output
            self.ngrams = ngrams

    @property
    def loss_columns(self) -> tuple[int, ...]:
        """Output columns that training fits to the labels."""
        return (1, 2) if self.ngrams is not None else (0,)

    def _encode(self, e, valid_length):
        return self.encoder(e, valid_length) if getattr(self.encoder, "uses_length", True) else self.encoder(e)

    def hybrid_forward(self, F, tokens, valid_length, bag=None):
        e = self.embedding(tokens, valid_length)
        logit = self.output(self.hidden(self._encode(e, valid_length)))
        if self.ngrams is None:
            return logit
        if bag is None:
            raise ValueError("this network has an n-gram branch: call it with (tokens, valid_length, bag)")
        return self.ngrams(bag, logit)

    def layer_outputs(self, tokens, valid_length, bag=None) -> dict[str, mx.nd.NDArray]:
        """Every named layer's output, one vector per review (sequence layers are
        mean-pooled over valid tokens). Runs imperatively (inference mode)."""
        e = self.embedding(tokens, valid_length)
        enc = self._encode(e, valid_length)
        hid = self.hidden(enc)
        out = self.output(hid)
        outs = {"embedding": masked_pool(mx.nd, e, valid_length, ("mean",)), "encoder": enc, "hidden": hid,
                "output": out}
        if self.ngrams is not None and bag is not None:
            outs["ngrams"] = self.ngrams(bag, out)[:, 2:3]
        return outs


def layer_names(net: TextClassifier) -> list[str]:
    """The stable names of the network's layers, input to output."""
    return [name for name in LAYERS if getattr(net, name, None) is not None]


def layer_param_counts(net: TextClassifier) -> dict[str, int]:
    """Number of scalar parameters in each named layer (shapes must be known)."""
    counts = {}
    for name in layer_names(net):
        params = getattr(net, name).collect_params().values()
        counts[name] = int(sum(int(np.prod(p.shape)) for p in params))
    return counts


# --------------------------------------------------------------------------- config
def bigram_buckets(model_cfg: Mapping) -> int:
    return ngram_spec(model_cfg)["buckets"]


def ngram_spec(model_cfg: Mapping) -> dict:
    """How reviews are featurized for this model: hashed n-gram buckets, n, dedup (pool encoder only)."""
    enc = section("model", model_cfg)["encoder"]
    return {"buckets": enc.get("bigram_buckets", 0), "ngrams": enc.get("ngrams", 2), "unique": enc.get("unique", False)}


def featurize(ids: np.ndarray, vocab_size: int, buckets: int, ngrams: int = 2, unique: bool = False) -> np.ndarray:
    """Append hashed 2..``ngrams``-gram ids (fastText) after the unigram ids when ``buckets`` > 0.

    N-gram ids live in ``[vocab_size, vocab_size + buckets)``; reviews are featurized
    before padding, so no n-gram contains padding. With ``unique`` every id appears
    once (a binarized bag of n-grams, as in NBSVM).
    """
    if buckets and len(ids) >= 2:
        parts = [ids]
        h = ids.astype(np.int64)
        for n in range(2, max(2, ngrams) + 1):
            if len(ids) < n:
                break
            h = (h[:-1] * BIGRAM_PRIME + ids[n - 1:].astype(np.int64)) % (1 << 61)
            parts.append((h % buckets + vocab_size).astype(ids.dtype))
        ids = np.concatenate(parts)
    return np.unique(ids) if unique else ids


def bag_spec(model_cfg: Mapping) -> dict | None:
    """The n-gram branch's featurization (``model.ngrams``), or None without one:
    buckets, n and the categorical columns whose values join the bag (``columns``)."""
    cfg = section("model", model_cfg)["ngrams"]
    if not (cfg and cfg["buckets"]):
        return None
    return {"buckets": cfg["buckets"], "n": cfg["n"], "columns": list(cfg["categorical"] or [])}


def with_categorical(model_cfg: Mapping, columns: Sequence[str]) -> dict:
    """The model config with ``ngrams.categorical`` resolved for a dataset whose categorical
    columns are ``columns``: null (the default) becomes all of them; a list must name only
    them. A network built from the result, and the bundle saving it, know their columns."""
    cfg = section("model", model_cfg)
    ngrams = cfg.get("ngrams")
    if not ngrams:
        return cfg
    chosen = ngrams.get("categorical")
    if chosen is None:
        chosen = list(columns)
    unknown = [c for c in chosen if c not in columns]
    if unknown:
        raise ConfigError(f"model.ngrams.categorical: {', '.join(map(repr, unknown))} not among the data's "
                          f"categorical columns ({', '.join(columns) or 'none'})")
    return {**cfg, "ngrams": {**ngrams, "categorical": list(chosen)}}


def category_keys(frame, columns: Sequence[str]) -> list[np.ndarray]:
    """Per row of ``frame``, one 64-bit key per categorical column: a hash of ``column=value``
    (blake2b, the same in every process), values spelt as the preprocessor's ``CategoryImputer``
    passes them (a missing value is its ``fill_value``); a column the frame lacks adds no key
    (a bare list of texts scores as if its values were unknown)."""
    import hashlib

    from .transforms import CategoryImputer

    present = [c for c in columns if c in frame.columns]
    if not present:
        return [np.zeros(0, dtype=np.uint64)] * len(frame)
    cache: dict[str, int] = {}

    def h(col: str, value: str) -> int:
        text = f"{col}\x1f{value}"
        if text not in cache:
            cache[text] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        return cache[text]

    values = CategoryImputer().transform(frame[present])
    return [np.array([h(c, v) for c, v in zip(present, row)], dtype=np.uint64) for row in values]


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 (wrapping): every input bit reaches every output bit,
    so ``% buckets`` spreads keys evenly whatever ``buckets`` is (a power of two included)."""
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def ngram_bag(ids: np.ndarray, buckets: int, n: int = 3, extra: np.ndarray | None = None) -> np.ndarray:
    """The distinct hashed 1..``n``-grams of one review's token ids (and ``extra`` 64-bit
    keys: its ``category_keys``), as sorted indices in ``[1, buckets]`` (0 is padding).
    Hashes use the ids only (no Python ``hash``), so a bag is the same in every process;
    ids kept when a vocabulary is extended keep their n-grams' buckets."""
    ids = np.asarray(ids, dtype=np.int64)
    parts, h = [ids], ids
    for k in range(2, n + 1):
        if len(ids) < k:
            break
        h = (h[:-1] * BIGRAM_PRIME + ids[k - 1:]) % (1 << 61)
        parts.append(h * 8 + k)  # the order tells 2-grams from 3-grams with the same hash
    keys = _mix64(np.concatenate([p.astype(np.uint64) for p in parts]
                                 + ([np.asarray(extra, dtype=np.uint64)] if extra is not None else [])))
    return (np.unique(keys % np.uint64(buckets)) + 1).astype(np.int32)


def bag_buckets(keys: np.ndarray, buckets: int) -> np.ndarray:
    """The bag indices of ``extra`` keys alone (as ``ngram_bag`` places them)."""
    return (np.unique(_mix64(np.asarray(keys, dtype=np.uint64)) % np.uint64(buckets)) + 1).astype(np.int32)


def _encoder(enc: Mapping, esize: int) -> HybridBlock:
    etype = enc["type"]
    if etype == "pool":
        return PoolEncoder(esize, pooling=tuple(enc["pooling"]), prefix="encoder_")
    if etype == "cnn":
        return CNNEncoder(esize, widths=tuple(enc["widths"]), filters=enc["filters"], prefix="encoder_")
    return RNNEncoder(esize, cell="gru" if "gru" in etype else "lstm", hidden_size=enc["hidden_size"],
                      num_layers=enc["num_layers"], bidirectional=enc["bidirectional"], dropout=enc["dropout"],
                      prefix="encoder_")


def build_model(cfg: Mapping, vocab_size: int) -> TextClassifier:
    """Assemble a TextClassifier from a ``model`` config (``conf/model/*.yaml``)."""
    cfg = section("model", cfg)
    emb, enc, hid = cfg["embedding"], cfg["encoder"], cfg["hidden"]
    buckets = enc.get("bigram_buckets", 0)
    if vocab_size < 2:
        raise ConfigError(f"vocabulary has {vocab_size} entries; it needs at least <pad> and <unk>")
    embedding = EmbeddingLayer(vocab_size + buckets, emb["size"], emb["dropout"], sparse_grad=emb["sparse_grad"],
                               init_scale=emb["init_scale"], prefix="embedding_")
    encoder = _encoder(enc, emb["size"])
    hidden = HiddenLayer(encoder.output_size, hid["size"], hid["dropout"], hid["activation"], prefix="hidden_")
    output = nn.Dense(cfg["output"]["size"], in_units=hidden.size, prefix="output_")
    ngrams = None
    if bag_spec(cfg):
        if cfg["output"]["size"] != 1:
            raise ConfigError("model.ngrams: the n-gram branch needs model.output.size 1 (binary labels)")
        ngrams = NgramBag(cfg["ngrams"]["buckets"], prefix="ngrams_")
        for p in ngrams.collect_params().values():
            p.lr_mult = cfg["ngrams"]["lr_mult"]
    return TextClassifier(embedding, encoder, hidden, output, ngrams, prefix="xfer_")


def set_param(param, value) -> None:
    """``param.set_data(value)`` that also works after inference: oneDNN reorders a
    convolution's weight in place into its blocked layout when the net predicts, and
    MXNet 1.9's copy (``set_data``) cannot write into such a 3-D array; the ``identity``
    operator can (it reorders into the destination)."""
    for arr in param.list_data():
        src = value if isinstance(value, mx.nd.NDArray) else mx.nd.array(value, dtype=arr.dtype)
        if src.shape != arr.shape:
            raise ValueError(f"parameter {param.name}: value of shape {src.shape}, parameter {arr.shape}")
        mx.nd.identity(src.as_in_context(arr.context), out=arr)


def initialize(net: TextClassifier, seed: int, ctx=None) -> TextClassifier:
    """Seeded initialisation (Xavier for dense/conv/rnn, the layer's own for embeddings)."""
    mx.random.seed(int(seed))
    np.random.seed(int(seed))
    net.initialize(mx.init.Xavier(), ctx=ctx or mx.cpu(), force_reinit=True)
    return net
