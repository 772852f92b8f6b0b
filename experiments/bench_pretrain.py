"""Word-vector pretraining: gensim's Word2Vec (what xfer's pretrain stage runs) against GluonNLP
0.10's own skip-gram training (its scripts/word_embeddings recipe: CSREmbeddingModel, the
EmbeddingCenterContextBatchify sampler with numba, UnigramCandidateSampler negatives,
GroupAdaGrad), on the same token stream with the same settings.

    pip install "numba>=0.57,<0.59"     # GluonNLP's sampler JIT (not a project dependency)
    python experiments/bench_pretrain.py [--reviews 25000] [--epochs 1]

GluonNLP 0.10 imports ``numba.jitclass``, which numba moved to ``numba.experimental`` in 0.49 (no
numba that old installs on Python 3.11): without the alias set below its batchify silently runs
as plain Python, many times slower. The alias gives GluonNLP its JIT, as its scripts intend.

The corpus: IMDB training reviews tokenized by xfer's default preprocessing, tokens below
min_count dropped and frequent tokens subsampled once (GluonNLP's rule, t=1e-4) for both, so
both see the same token stream (gensim's own subsampling is off). Speed: ``tokens_per_second``
(tokens of that stream per second of training, batching included). Quality of the vectors:
``doc_vector_test_accuracy``, logistic regression on each review's mean vector (the training
reviews -> 5,000 IMDB test reviews), the same for both. Writes experiments/results/pretrain_gluonnlp_vs_gensim.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIM, WINDOW, NEGATIVE, MIN_COUNT, SUBSAMPLE, SEED = 64, 5, 5, 5, 1e-4, 0


def tokenized(frame, pre, column: str = "text") -> list[list[str]]:
    from xfer.transforms import tokens_of

    return [list(t) for t in tokens_of(pre, frame[column].tolist())]


def stream(docs: list[list[str]]) -> tuple[list[list[str]], list[str], np.ndarray]:
    """Tokens >= MIN_COUNT, frequent ones subsampled once (seeded): (docs, vocabulary, counts)."""
    counts = Counter(t for d in docs for t in d)
    vocab = sorted((t for t, c in counts.items() if c >= MIN_COUNT), key=lambda t: (-counts[t], t))
    total = float(sum(counts[t] for t in vocab))
    keep = {t: min(1.0, math.sqrt(SUBSAMPLE / (counts[t] / total))) for t in vocab}
    rng = np.random.default_rng(SEED)
    out = [[t for t, r in zip(d, rng.random(len(d))) if t in keep and r < keep[t]] for d in docs]
    return out, vocab, np.array([counts[t] for t in vocab], dtype="float32")


def train_gensim(docs, workers: int, epochs: int) -> tuple[dict[str, np.ndarray], float]:
    import tempfile

    import gensim.models

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_text("\n".join(" ".join(d) for d in docs))
        t0 = time.perf_counter()
        m = gensim.models.Word2Vec(corpus_file=str(path), vector_size=DIM, sg=1, window=WINDOW, negative=NEGATIVE,
                                   min_count=1, sample=0, epochs=epochs, workers=workers, seed=SEED)
        seconds = time.perf_counter() - t0
    return {t: m.wv[t] for t in m.wv.index_to_key}, seconds


def skipgram_net(vocab_size: int, counts, batch_size: int):
    """The skip-gram network of GluonNLP's word-embedding scripts: centre words through
    ``CSREmbeddingModel`` (a sparse dot of a CSR one-hot batch), context and negatives through
    an output embedding, negatives drawn by ``UnigramCandidateSampler`` (counts^0.75), negatives
    equal to the centre or context word masked out, logistic loss."""
    import mxnet as mx
    import gluonnlp as nlp

    class Net(mx.gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.embedding = nlp.model.train.CSREmbeddingModel(
                    token_to_idx={i: i for i in range(vocab_size)}, output_dim=DIM,
                    weight_initializer=mx.init.Uniform(scale=1 / DIM), sparse_grad=True)
                self.embedding_out = mx.gluon.nn.Embedding(vocab_size, DIM, weight_initializer=mx.init.Zero(),
                                                           sparse_grad=True)
                self.sampler = nlp.data.UnigramCandidateSampler(weights=counts ** 0.75, dtype="int64")

        def hybrid_forward(self, F, center, context, center_words):
            negs = [self.sampler(center_words) for _ in range(NEGATIVE)]
            mask = F.stack(*[F.stack(n != center_words, n != context).min(axis=0) for n in negs], axis=1)
            negs, mask = F.stack(*negs, axis=1), mask.astype("float32")
            emb_center = self.embedding(center).expand_dims(1)
            pos = F.batch_dot(emb_center, self.embedding_out(context).expand_dims(2)).squeeze()
            loss_pos = (F.relu(pos) - pos + F.Activation(-F.abs(pos), act_type="softrelu")) / (mask.sum(axis=1) + 1)
            emb_neg = self.embedding_out(negs).reshape((-1, NEGATIVE, DIM)).swapaxes(1, 2)
            neg = F.batch_dot(emb_center, emb_neg).squeeze()
            loss_neg = (F.relu(neg) + F.Activation(-F.abs(neg), act_type="softrelu")) * mask
            return loss_pos + loss_neg.sum(axis=1) / (mask.sum(axis=1) + 1)

    return Net()


def train_gluonnlp(docs, vocab, counts, epochs: int, batch_size: int = 4096) -> tuple[dict[str, np.ndarray], float]:
    """GluonNLP's skip-gram recipe (scripts/word_embeddings/model.py SG + train_sg_cbow.py loop)."""
    import mxnet as mx
    import gluonnlp as nlp

    mx.random.seed(SEED)
    index = {t: i for i, t in enumerate(vocab)}
    coded = [np.array([index[t] for t in d], dtype="int64") for d in docs if len(d) > 1]
    net = skipgram_net(len(vocab), mx.nd.array(counts), batch_size)
    net.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = mx.gluon.Trainer(net.collect_params(), "groupadagrad", {"learning_rate": 0.1})
    batchify = nlp.data.batchify.EmbeddingCenterContextBatchify(batch_size=batch_size, window_size=WINDOW)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for centers, contexts in batchify(coded):
            ctx_words = mx.nd.array(contexts[2], dtype="int64")
            indptr = mx.nd.arange(len(centers) + 1)
            center_idx = mx.nd.array(centers, dtype="int64")
            center_csr = mx.nd.sparse.csr_matrix((mx.nd.ones(center_idx.shape), center_idx, indptr),
                                                 dtype="float32", shape=(len(centers), len(vocab)))
            with mx.autograd.record():
                loss = net(center_csr, ctx_words, center_idx)
            loss.backward()
            trainer.step(batch_size=1)
    mx.nd.waitall()
    seconds = time.perf_counter() - t0
    weight = net.embedding.weight.data().asnumpy()
    return {t: weight[i] for i, t in enumerate(vocab)}, seconds


def doc_accuracy(vectors: dict, train_docs, y_train, test_docs, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def embed(docs):
        zero = np.zeros(DIM, dtype="float32")
        return np.stack([np.mean([vectors[t] for t in d if t in vectors] or [zero], axis=0) for d in docs])

    scaler = StandardScaler().fit(embed(train_docs))
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(embed(train_docs)), y_train)
    return float(clf.score(scaler.transform(embed(test_docs)), y_test))


def give_gluonnlp_numba() -> str | None:
    """Before gluonnlp is imported: ``numba.jitclass`` where GluonNLP 0.10 looks for it."""
    try:
        import numba
        import numba.experimental
    except ImportError:
        return None
    numba.jitclass = numba.experimental.jitclass
    return numba.__version__


def main() -> None:
    numba_version = give_gluonnlp_numba()
    assert "gluonnlp" not in sys.modules
    from xfer.config import compose_config
    from xfer.data import load_dataset
    from xfer.provenance import provenance
    from xfer.schema import validate
    from xfer.transforms import build_preprocessor, fit_preprocessor

    ap = argparse.ArgumentParser()
    ap.add_argument("--reviews", type=int, default=25000, help="IMDB training reviews in the corpus")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    prov = provenance()
    cfg = validate(compose_config(["+experiment=imdb_base"]))
    ds = load_dataset(cfg["data"], seed=cfg["seed"])
    train = ds.train.sample(n=min(args.reviews, len(ds.train)), random_state=SEED)
    pre = fit_preprocessor(build_preprocessor(cfg["transforms"], ds.categorical), train)
    train_docs = tokenized(train, pre)
    docs, vocab, counts = stream(train_docs)
    test = ds.test.sample(n=min(5000, len(ds.test)), random_state=SEED)
    test_docs = tokenized(test, pre)
    n_tokens = sum(len(d) for d in docs)  # one pass
    print(f"corpus: {len(docs)} reviews, {n_tokens} tokens after subsampling, vocabulary {len(vocab)}", flush=True)
    results = {}
    for name, epochs, run in [("gensim_1_thread", args.epochs, lambda: train_gensim(docs, 1, args.epochs)),
                              ("gensim_2_threads", args.epochs, lambda: train_gensim(docs, 2, args.epochs)),
                              ("gluonnlp", args.epochs, lambda: train_gluonnlp(docs, vocab, counts, args.epochs)),
                              # xfer's pretrain default: 5 epochs, one thread
                              ("gensim_1_thread_5_epochs", 5, lambda: train_gensim(docs, 1, 5))]:
        vectors, seconds = run()
        acc = doc_accuracy(vectors, train_docs, train["label"].to_numpy(), test_docs, test["label"].to_numpy())
        results[name] = {"epochs": epochs, "train_seconds": round(seconds, 2),
                         "tokens_per_second": round(n_tokens * epochs / seconds),
                         "doc_vector_test_accuracy": round(acc, 4)}
        print(name, results[name], flush=True)
    record = {**prov, "command": "python experiments/bench_pretrain.py " + " ".join(sys.argv[1:]),
              "reviews": len(docs), "tokens_per_pass": n_tokens, "vocabulary": len(vocab), "epochs": args.epochs,
              "settings": {"dim": DIM, "window": WINDOW, "negative": NEGATIVE, "min_count": MIN_COUNT,
                           "subsample": SUBSAMPLE, "omp_threads": os.environ.get("OMP_NUM_THREADS", "default"),
                           "gluonnlp_numba": numba_version},
              "methods": results,
              "speedup_gensim_1_thread_vs_gluonnlp": round(results["gensim_1_thread"]["tokens_per_second"]
                                                           / results["gluonnlp"]["tokens_per_second"], 2)}
    dest = ROOT / "experiments" / "results" / "pretrain_gluonnlp_vs_gensim.json"
    dest.write_text(json.dumps(record, indent=2) + "\n")
    print(dest)


if __name__ == "__main__":
    main()
