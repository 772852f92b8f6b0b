"""Word vectors from unlabelled text, handed to a network's ``embedding`` layer.

``train_vectors`` learns them with gensim (word2vec skip-gram or CBOW, or fastText with subword
n-grams): gensim's C loops read the corpus from a file (``corpus_file``), one token per word as
the stage's own preprocessor splits it, so every vector belongs to a token the network's
vocabulary can hold. ``read_vectors`` loads a word2vec / GloVe / fastText text file through
``gluonnlp.embedding.TokenEmbedding``. ``apply_vectors`` writes them into the embedding rows of
the tokens they cover; the other rows keep the layer's initialisation (``oov=random``) or become
zero. This module knows nothing of MLflow: the stage that reuses a finished pretraining by its
fingerprint is ``xfer.jobs.pretrain``.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .data import read_csv
from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: gensim's class and its ``sg`` flag per method
GENSIM = {"skipgram": ("Word2Vec", 1), "cbow": ("Word2Vec", 0), "fasttext": ("FastText", 1)}


@dataclass
class WordVectors:
    """Tokens and their vectors (float32, one row per token); trained ones also keep what
    continuing their training needs: the output (context) vectors and the token counts."""
    tokens: list[str]
    vectors: np.ndarray
    context: np.ndarray | None = None
    counts: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        extra = {} if self.context is None else {"context": self.context, "counts": self.counts}
        np.savez_compressed(path, tokens=np.array(self.tokens, dtype=object).astype(str), vectors=self.vectors, **extra)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "WordVectors":
        with np.load(path, allow_pickle=False) as z:
            context = z["context"].astype(np.float32) if "context" in z.files else None
            counts = z["counts"].astype(np.int64) if "counts" in z.files else None
            return cls([str(t) for t in z["tokens"]], z["vectors"].astype(np.float32), context, counts)

    def lookup(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(matrix with a row per token, bool mask of the tokens that have a vector)."""
        index = {t: i for i, t in enumerate(self.tokens)}
        rows = np.array([index.get(t, -1) for t in tokens], dtype=np.int64)
        found = rows >= 0
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        out[found] = self.vectors[rows[found]]
        return out, found


def check(pcfg: Mapping, dim: int) -> None:
    """Settings that cannot work, as one line, before anything is read or trained."""
    if pcfg["method"] == "file" and not pcfg["vectors"]:
        raise ConfigError("pretrain.vectors: required when pretrain.method=file (a word2vec/GloVe/fastText text file)")
    if pcfg["method"] == "file" and not Path(pcfg["vectors"]).is_file():
        raise DataError(f"{pcfg['vectors']}: file not found (pretrain.vectors)")
    for f in pcfg["files"]:
        if not Path(f).is_file():
            raise DataError(f"{f}: file not found (pretrain.files)")
    if dim < 1:
        raise ConfigError("model.embedding.size: the network has no embedding layer to initialise")


def read_vectors(path: str | Path, dim: int | None = None) -> WordVectors:
    """A word2vec / GloVe / fastText text file: one token and its numbers per line, separated by
    spaces; a first line of two integers (word2vec's "count dim" header) is skipped."""
    import gluonnlp

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*skipped likely header line.*")
            emb = gluonnlp.embedding.TokenEmbedding.from_file(str(path), elem_delim=" ", unknown_token=None)
    except (AssertionError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a word-vectors text file: {str(e).splitlines()[0][:200]}") from None
    if not emb.idx_to_token:
        raise DataError(f"{path}: no vectors in the file")
    vectors = emb.idx_to_vec.asnumpy().astype(np.float32)
    if dim is not None and vectors.shape[1] != dim:
        raise ConfigError(f"pretrain.vectors: {path} has {vectors.shape[1]}-dimensional vectors, the embedding "
                          f"layer {dim} (model.embedding.size)")
    return WordVectors(list(emb.idx_to_token), vectors)


def unlabelled_texts(pcfg: Mapping, own_texts: Iterable[str]) -> list[str]:
    """The stage's own training texts followed by the texts of ``pretrain.files``."""
    texts = [t for t in own_texts if isinstance(t, str)]
    for f in pcfg["files"]:
        frame = read_csv(f, [pcfg["text_column"]])
        texts += [t for t in frame[pcfg["text_column"]].tolist() if isinstance(t, str)]
    return texts


def write_corpus(pre, texts: Sequence[str], path: Path, chunk: int = 20000) -> int:
    """One line of space-separated tokens per text, as the fitted preprocessor splits it
    (gensim's LineSentence format). Returns the number of tokens written."""
    from .transforms import tokens_of

    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, len(texts), chunk):
            for toks in tokens_of(pre, texts[start:start + chunk]):
                if toks:
                    fh.write(" ".join(toks))
                    fh.write("\n")
                    n += len(toks)
    return n


@contextmanager
def epoch_bar(desc: str, epochs: int, progress: bool):
    """A tqdm bar advanced by gensim at the end of every epoch (a gensim callback)."""
    from gensim.models.callbacks import CallbackAny2Vec
    from tqdm.auto import tqdm

    class Bar(CallbackAny2Vec):
        def __init__(self):
            self.bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=not progress, leave=False)

        def on_epoch_end(self, model):
            self.bar.update(1)

    bar = Bar()
    try:
        yield bar
    finally:
        bar.bar.close()


def _result(model) -> WordVectors:
    """A gensim model's vectors; word2vec's also with its context vectors and counts."""
    wv = model.wv
    context = getattr(model, "syn1neg", None)
    counts = np.array([wv.get_vecattr(t, "count") for t in wv.index_to_key], dtype=np.int64)
    return WordVectors(list(wv.index_to_key), np.asarray(wv.vectors, dtype=np.float32),
                       None if context is None or model.__class__.__name__ != "Word2Vec" else
                       np.asarray(context, dtype=np.float32), counts)


def require_word2vec(method: str | None) -> None:
    """Adaptation continues word2vec's objective: the base must have been pretrained with it."""
    if method not in ("skipgram", "cbow"):
        raise ConfigError("transfer.adapt: needs a base pretrained with base.pretrain.method=skipgram or cbow "
                          f"(this base: {method or 'none'})")


def adapt_vectors(wv: WordVectors, pcfg: Mapping, pre, texts: Sequence[str], epochs: int, seed: int,
                  progress: bool = True) -> tuple[WordVectors, dict]:
    """Continue the word2vec objective of ``wv`` on ``texts`` (a target domain's unlabelled text,
    tokenized by ``pre``), as ULMFiT fine-tunes its language model on the target: known tokens
    start from their pretrained vectors (and context vectors), target tokens seen at least
    ``min_count`` times join with fresh ones. Returns the adapted vectors and figures."""
    import time

    from gensim.models import Word2Vec

    require_word2vec(pcfg.get("method") if wv.context is not None else None)
    logging.getLogger("gensim").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xfer-adapt-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n_tokens = write_corpus(pre, list(texts), corpus)
        target = {}
        with open(corpus, encoding="utf-8") as fh:
            for line in fh:
                for t in line.split():
                    target[t] = target.get(t, 0) + 1
        freq = dict(zip(wv.tokens, wv.counts.tolist()))
        new = [t for t, c in target.items() if c >= pcfg["min_count"] and t not in freq]
        for t, c in target.items():
            if t in freq or c >= pcfg["min_count"]:
                freq[t] = freq.get(t, 0) + c
        model = Word2Vec(vector_size=wv.dim, sg=GENSIM[pcfg["method"]][1], window=pcfg["window"],
                         negative=pcfg["negative"], sample=pcfg["sample"], min_count=1, workers=pcfg["workers"],
                         seed=int(seed))
        model.build_vocab_from_freq(freq)
        rows = np.array([model.wv.key_to_index[t] for t in wv.tokens])
        model.wv.vectors[rows] = wv.vectors
        model.syn1neg[rows] = wv.context
        with epoch_bar("adapt", epochs, progress) as bar:
            model.train(corpus_file=str(corpus), total_words=n_tokens, epochs=epochs, callbacks=[bar])
    seconds = time.perf_counter() - t0
    log.info("adapt: %d target tokens, %d new vectors, %.1f s", n_tokens, len(new), seconds)
    return _result(model), {"adapt_tokens": float(n_tokens), "adapt_new_vectors": float(len(new)),
                            "adapt_seconds": seconds}


def train_vectors(pcfg: Mapping, pre, texts: Sequence[str], dim: int, seed: int,
                  progress: bool = True) -> tuple[WordVectors, dict]:
    """Train word vectors on ``texts`` (tokenized by ``pre``); returns them and figures of the
    training (tokens, vocabulary, seconds) under MLflow metric names."""
    import time

    import gensim.models

    cls_name, sg = GENSIM[pcfg["method"]]
    logging.getLogger("gensim").setLevel(logging.WARNING)  # its INFO lines are per-phase chatter; xfer logs the result
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xfer-pretrain-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n_tokens = write_corpus(pre, list(texts), corpus)
        prep = time.perf_counter() - t0
        log.info("pretrain %s: %d texts, %d tokens (tokenized in %.1f s)", pcfg["method"], len(texts), n_tokens, prep)
        with epoch_bar(f"pretrain {pcfg['method']}", pcfg["epochs"], progress) as bar:
            model = getattr(gensim.models, cls_name)(
                corpus_file=str(corpus), vector_size=dim, sg=sg, window=pcfg["window"], negative=pcfg["negative"],
                min_count=pcfg["min_count"], sample=pcfg["sample"], epochs=pcfg["epochs"], workers=pcfg["workers"],
                seed=int(seed), callbacks=[bar])
    out = _result(model)
    seconds = time.perf_counter() - t0
    log.info("pretrain %s: %d vectors of %d dimensions in %.1f s", pcfg["method"], len(out.tokens), dim, seconds)
    return out, {"pretrain_tokens": float(n_tokens), "pretrain_vocab": float(len(out.tokens)),
                 "pretrain_seconds": seconds, "pretrain_tokens_per_second": n_tokens * pcfg["epochs"] / max(seconds - prep, 1e-9)}


def apply_vectors(net, vocab_tokens: Sequence[str], wv: WordVectors, oov: str = "random",
                  rescale: bool = True) -> float:
    """Write ``wv`` into ``net.embedding``'s rows of ``vocab_tokens`` (index = row); returns the
    share of the vocabulary (``<pad>`` and ``<unk>`` aside) that got a vector."""
    from .models import set_param

    param = net.embedding.embed.weight
    weight = param.data().asnumpy()
    if weight.shape[1] != wv.dim:
        raise ConfigError(f"pretrain: {wv.dim}-dimensional vectors for a {weight.shape[1]}-dimensional embedding "
                          "layer (model.embedding.size)")
    n = len(vocab_tokens)  # rows beyond the vocabulary (hashed n-gram buckets of `pool`) are not words
    rows, found = wv.lookup(vocab_tokens)
    found[:2] = False  # <pad> (masked anyway) and <unk> keep their rows
    words = weight[:n]
    if rescale and found.any():
        rows *= words[2:].std() / max(float(rows[found].std()), 1e-12)
    if oov == "zero":
        words[2:] = 0.0
    words[found] = rows[found]
    set_param(param, weight)
    return float(found[2:].mean()) if len(found) > 2 else 0.0


def apply_adaptation(net, vocab_tokens: Sequence[str], n_known: int, before: WordVectors, after: WordVectors,
                     rescale: bool = True) -> dict:
    """Carry a domain adaptation into a transferred network's embedding: rows of tokens the base
    knew (index < ``n_known``) move by the adaptation's change of their vector (after - before),
    rows of tokens new to the base get their adapted vector; both scaled as ``apply_vectors``
    scales pretrained vectors to the layer. Returns the counts of moved and new rows."""
    from .models import set_param

    param = net.embedding.embed.weight
    weight = param.data().asnumpy()
    n = len(vocab_tokens)
    old, had = before.lookup(vocab_tokens)
    new, has = after.lookup(vocab_tokens)
    known = np.arange(n) < n_known
    moved, added = had & has & known, has & ~known
    moved[:2] = added[:2] = False
    scale = 1.0
    if rescale and had[2:n_known].any():
        scale = weight[2:n_known].std() / max(float(old[had].std()), 1e-12)
    words = weight[:n]
    words[moved] += scale * (new[moved] - old[moved])
    words[added] = scale * new[added]
    set_param(param, weight)
    return {"adapt_moved_rows": float(moved.sum()), "adapt_new_rows": float(added.sum())}
