"""The pretrain stage: word vectors read from a file or trained with gensim, written into the
embedding layer, tracked as their own run and reused by fingerprint."""
import numpy as np
import pandas as pd
import pytest

from helpers import QUICK, list_runs, run_cli
from xfer.config import compose_config
from xfer.errors import ConfigError, DataError
from xfer.jobs import run_task
from xfer.jobs.train import base_fingerprint
from xfer.models import build_model, initialize
from xfer.pretrain import WordVectors, apply_vectors, read_vectors, train_vectors
from xfer.schema import validate
from xfer.tracking import make_tracker
from xfer.transforms import build_preprocessor, fit_preprocessor, token_vocab

VECS = {"good": [0.5, 0.1, -0.2, 0.0], "bad": [-0.4, 0.3, 0.1, 0.2], "film": [0.0, 0.0, 0.9, -0.1]}


def write_vectors(path, header: bool = True, vecs=VECS):
    lines = [f"{len(vecs)} {len(next(iter(vecs.values())))}"] if header else []
    lines += [f"{t} " + " ".join(str(x) for x in v) for t, v in vecs.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("header", [True, False], ids=["word2vec", "glove"])
def test_vectors_are_read_from_word2vec_and_glove_text_files(tmp_path, header):
    wv = read_vectors(write_vectors(tmp_path / "v.txt", header=header), dim=4)
    assert wv.tokens == ["good", "bad", "film"]
    np.testing.assert_allclose(wv.vectors[1], VECS["bad"], rtol=1e-6)
    rows, found = wv.lookup(["film", "nope", "good"])
    assert found.tolist() == [True, False, True] and not rows[1].any()


def test_bad_vector_files_are_one_line_errors(tmp_path):
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("good 0.1 0.2\nbad 0.3\nfilm 0.1 0.2 0.3\n")
    with pytest.raises(DataError, match=r"ragged.txt: not a word-vectors text file") as e:
        read_vectors(ragged)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"4-dimensional vectors, the embedding layer 8"):
        read_vectors(write_vectors(tmp_path / "v.txt"), dim=8)


def _net_and_vocab(texts, size=4):
    cfg = validate(compose_config(["+experiment=imdb_base", "model=pool", f"model.embedding.size={size}",
                                   "model.encoder.bigram_buckets=10"]))
    pre = fit_preprocessor(build_preprocessor(cfg["transforms"], []), pd.DataFrame({"text": texts}))
    vocab = token_vocab(pre).vocab_.idx_to_token
    net = initialize(build_model(cfg["model"], len(vocab)), seed=0)
    return net, vocab, pre


def test_vectors_initialise_the_embedding_rows_of_their_tokens():
    net, vocab, _ = _net_and_vocab(["good film good film", "bad film bad plot", "plot twist twist"])
    before = net.embedding.embed.weight.data().asnumpy().copy()
    wv = WordVectors(list(VECS), np.array(list(VECS.values()), dtype=np.float32))
    coverage = apply_vectors(net, vocab, wv, oov="random", rescale=True)
    after = net.embedding.embed.weight.data().asnumpy()
    assert coverage == pytest.approx(3 / (len(vocab) - 2))  # good, bad, film of good/film/bad/plot/twist
    for token, vec in VECS.items():
        row = after[vocab.index(token)]
        cos = row @ np.array(vec) / np.linalg.norm(row) / np.linalg.norm(vec)
        assert cos == pytest.approx(1.0, abs=1e-6)  # the same direction, rescaled
    np.testing.assert_array_equal(after[vocab.index("plot")], before[vocab.index("plot")])  # no vector: kept
    np.testing.assert_array_equal(after[:2], before[:2])  # <pad> and <unk> keep their rows
    np.testing.assert_array_equal(after[len(vocab):], before[len(vocab):])  # n-gram buckets untouched
    apply_vectors(net, vocab, wv, oov="zero", rescale=False)
    after = net.embedding.embed.weight.data().asnumpy()
    assert not after[vocab.index("twist")].any()
    np.testing.assert_allclose(after[vocab.index("good")], VECS["good"], rtol=1e-6)


def test_training_is_seeded_and_keeps_the_tokenizers_tokens():
    texts = [f"the movie was {w} and the plot was {w} !" for w in ("good", "great", "bad", "awful") * 30]
    _, _, pre = _net_and_vocab(texts, size=8)
    pcfg = validate(compose_config(["+experiment=imdb_base", "pretrain=skipgram", "pretrain.min_count=1"]))["pretrain"]
    a, metrics = train_vectors(pcfg, pre, texts, dim=8, seed=3, progress=False)
    b, _ = train_vectors(pcfg, pre, texts, dim=8, seed=3, progress=False)
    c, _ = train_vectors(pcfg, pre, texts, dim=8, seed=4, progress=False)
    assert a.tokens == b.tokens and np.array_equal(a.vectors, b.vectors)  # one worker: reproducible
    assert not np.array_equal(a.vectors, c.vectors)
    assert "!" in a.tokens and "movie" in a.tokens and a.vectors.shape == (len(a.tokens), 8)
    assert metrics["pretrain_tokens"] == 120 * 10


def test_file_method_needs_a_file():
    cfg = validate(compose_config([*QUICK, "pretrain=file"]))
    with pytest.raises(ConfigError, match="pretrain.vectors: required when pretrain.method=file"):
        base_fingerprint(cfg)


def test_a_pretrained_stage_is_its_own_run_and_is_reused(tmp_path):
    from conftest import need_data

    need_data("imdb/train.csv.gz", "imdb/test.csv.gz")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    over = [*QUICK, "pretrain=skipgram", "pretrain.epochs=1", "pretrain.min_count=2", f"tracking.uri={store}",
            f"tracking.artifact_location={tmp_path / 'artifacts'}"]
    first = validate(compose_config(over))
    assert base_fingerprint(first) != base_fingerprint(validate(compose_config(over[:-4] + over[-2:])))
    r1 = run_task(first, tmp_path / "a", make_tracker(first["tracking"]))
    second = validate(compose_config([*over, "optimizer.lr=0.003"]))  # same vectors, another network
    r2 = run_task(second, tmp_path / "b", make_tracker(second["tracking"]))
    runs = list_runs(tmp_path)
    pretrain = [r for r in runs if r.data.tags.get("xfer.task") == "pretrain"]
    trains = [r for r in runs if r.data.tags.get("xfer.task") == "train"]
    assert len(pretrain) == 1 and len(trains) == 2  # trained once, then reused
    assert {r.data.tags["xfer.pretrain_run"] for r in trains} == {pretrain[0].info.run_id}
    assert pretrain[0].data.metrics["pretrain_vocab"] > 100
    assert all(0 < r.data.metrics["pretrain_coverage"] <= 1 for r in trains)
    assert r1["loaded"].meta["pretrain"]["source"] == "trained" and r2["loaded"].meta["pretrain"]["source"] == "reused"


def test_cli_rejects_a_missing_vectors_file_in_one_line(tmp_path):
    proc = run_cli(tmp_path, *QUICK, "pretrain=file", f"pretrain.vectors={tmp_path / 'nope.txt'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("nope.txt: file not found (pretrain.vectors)")
    assert "Traceback" not in proc.stderr and not list_runs(tmp_path)


def test_scratch_pretrained_starts_from_the_bases_vectors_and_is_skipped_without_them(tmp_path):
    from conftest import need_data
    from helpers import TRANSFER_QUICK

    need_data("imdb/train.csv.gz", "hotel/hotel_reviews_sample.csv.gz")
    store = [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_location={tmp_path / 'art'}"]
    over = [*TRANSFER_QUICK, *store, "transfer.repeats=1", "transfer.tsne.enabled=false", "transfer.save_bundle=false",
            "transfer.methods=[transfer,scratch,scratch_pretrained]"]
    cfg = validate(compose_config([*over, "pretrain@base.pretrain=skipgram", "base.pretrain.epochs=1",
                                   "base.pretrain.min_count=1"]))
    result = run_task(cfg, tmp_path / "a", make_tracker(cfg["tracking"]))
    assert [r["method"] for r in result["records"]] == ["transfer_gradual", "scratch", "scratch_pretrained"]
    for r in result["records"]:  # every record says which data and which base it belongs to
        assert {"data", "base", "method", "n_train", "seed", "test_roc_auc", "test_accuracy"} <= set(r)
        assert r["data"] == "hotel" and r["base"] == f"pool-{result['base']['fingerprint'][:8]}"
    [child] = list_runs(tmp_path, "tags.method = 'scratch_pretrained'")
    assert 0 < child.data.metrics["pretrain_coverage"] <= 1
    plain = validate(compose_config(over))  # a base without a pretrain stage: the method is left out
    result = run_task(plain, tmp_path / "b", make_tracker(plain["tracking"]))
    assert [r["method"] for r in result["records"]] == ["transfer_gradual", "scratch"]


def test_domain_adaptation_adds_target_tokens_and_an_ablation_without_it(tmp_path):
    from conftest import need_data
    from helpers import TRANSFER_QUICK

    need_data("imdb/train.csv.gz", "hotel/hotel_reviews_sample.csv.gz")
    over = [*TRANSFER_QUICK, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "transfer.repeats=1",
            f"tracking.artifact_location={tmp_path / 'art'}", "transfer.tsne.enabled=false", "transfer.save_bundle=false",
            "transfer.methods=[transfer,scratch_pretrained]", "transfer.adapt=true", "transfer.vocab=extend",
            "transfer.adapt_epochs=1", "data.n_train=100", "pretrain@base.pretrain=skipgram", "base.pretrain.epochs=1",
            "base.pretrain.min_count=2"]
    cfg = validate(compose_config(over))
    result = run_task(cfg, tmp_path / "out", make_tracker(cfg["tracking"]))
    assert [r["method"] for r in result["records"]] == ["transfer_gradual", "transfer_gradual_adapted",
                                                        "scratch_pretrained"]
    [adapted] = list_runs(tmp_path, "tags.method = 'transfer_gradual_adapted'")
    m = adapted.data.metrics
    assert m["adapt_new_rows"] > 0 and m["adapt_moved_rows"] > 0  # hotel words joined, IMDB words moved
    assert m["adapt_tokens"] > 100 * 20  # the whole training pool (349 reviews), not only the 100 labelled


def test_adaptation_needs_a_word2vec_base(tmp_path):
    from helpers import TRANSFER_QUICK

    cfg = validate(compose_config([*TRANSFER_QUICK, "transfer.adapt=true", "tracking.enabled=false"]))
    with pytest.raises(ConfigError, match=r"transfer.adapt: needs a base pretrained with .* \(this base: none\)"):
        run_task(cfg, tmp_path / "out")


def test_the_unlabelled_pool_holds_the_training_split_before_n_train_and_never_the_test_split():
    from conftest import need_data
    from xfer.data import load_dataset

    need_data("hotel/hotel_reviews_sample.csv.gz")
    data = validate(compose_config(["+experiment=hotel_transfer", "data.n_train=50"]))["data"]
    ds = load_dataset(data, seed=1)
    assert len(ds.train) == 50 and len(ds.pool_text) > 300
    assert set(ds.train["text"]) <= set(ds.pool_text)
    assert not set(ds.pool_text) & (set(ds.test["text"]) | set(ds.val["text"]))
