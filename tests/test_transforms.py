import json
import os
import re
import string
import subprocess
import sys
from collections import Counter
from unittest import mock

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError

import xfer.transforms as xfer_transforms
from xfer.data import data_dir, load_frame
from xfer.transforms import (PAD_ID, UNK_ID, LowerCaser, NullImputer, Tok2Idx, TokenizedCorpus, Tokenize,
                             apply_preprocessor, build_preprocessor, fit_preprocessor, text_pipeline, token_vocab)

DATA = data_dir()


def tutorial_tokens(text):
    """The tutorial's rule, verbatim: punctuation becomes its own token, split on whitespace."""
    return re.compile(f"([{string.punctuation}])").sub(r" \1 ", text).split()


def test_null_imputer_fills_missing_and_keeps_strings():
    out = NullImputer(fill_value="null").fit_transform(pd.Series(["a", None, np.nan, "", 3]))
    assert out.tolist() == ["a", "null", "null", "", "3"]


def test_lowercaser_has_fit_and_handles_unicode():
    lc = LowerCaser()
    assert lc.fit(["X"]) is lc
    assert lc.transform(["ÉCOLE Straße ΣΊΣΥΦΟΣ"]).tolist() == ["école straße σίσυφος"]


def test_tokenize_matches_tutorial_and_strips_html():
    tok = Tokenize(strip_html=False)
    text = "This is just an example. Isn't it?<br /><br />Yes!"
    assert tok.transform([text])[0] == tutorial_tokens(text)
    stripped = Tokenize().transform([text])[0]
    assert "br" not in stripped and "<" not in stripped
    assert stripped[-2:] == ["Yes", "!"]


def test_tokenize_edge_cases():
    tok = Tokenize()
    out = tok.transform(["", "   ", "日本語のレビュー。", "a" * 1_000_000 + " b"])
    assert out[0] == [] and out[1] == []
    assert out[2] == ["日本語のレビュー。"]
    assert len(out[3]) == 2 and len(out[3][0]) == 1_000_000


def test_tok2idx_ids_are_frequency_then_token_order():
    t = Tok2Idx().fit([["b", "a", "c", "b"], ["a", "d", "b"]])
    assert t.vocab_.idx_to_token == ["<pad>", "<unk>", "b", "a", "c", "d"]
    ids = t.transform([["a", "zzz", "b"], []])
    assert ids[0].tolist() == [3, UNK_ID, 2] and ids[0].dtype == np.int32
    assert ids[1].tolist() == []
    assert t.inverse_transform(ids)[0] == ["a", "<unk>", "b"]


def test_tok2idx_min_freq_and_max_size():
    docs = [["x"] * 5 + ["y"] * 3 + ["z"] * 2 + ["w"]]
    assert Tok2Idx(min_freq=2).fit(docs).vocab_.idx_to_token == ["<pad>", "<unk>", "x", "y", "z"]
    assert Tok2Idx(max_size=2).fit(docs).vocab_.idx_to_token == ["<pad>", "<unk>", "x", "y"]
    with pytest.raises(ValueError, match="min_freq"):
        Tok2Idx(min_freq=0).fit(docs)


def test_not_fitted_error_and_sklearn_conventions():
    with pytest.raises(NotFittedError):
        Tok2Idx().transform([["a"]])
    pipe = text_pipeline({"min_freq": 3, "max_size": 10})
    params = pipe.get_params()
    assert params["token2index__min_freq"] == 3 and params["tokenize__strip_html"] is True
    fitted = pipe.fit(pd.Series(["a b c", "a b", "a"]))
    cloned = clone(fitted)
    assert not hasattr(cloned.named_steps["token2index"], "vocab_")
    assert cloned.get_params()["token2index__max_size"] == 10
    cloned.set_params(token2index__min_freq=1)
    assert cloned.named_steps["token2index"].min_freq == 1


def test_pipeline_handles_nan_and_empty_text(imdb_slice):
    pipe = text_pipeline({"min_freq": 2}).fit(imdb_slice["text"])
    out = pipe.transform(pd.Series([np.nan, "", None, "unseen-wordzzz"]))
    null_id = token_vocab(pipe).vocab_.token_to_idx.get("null", UNK_ID)
    assert out[0].tolist() == [null_id] and out[1].tolist() == [] and out[2].tolist() == [null_id]
    assert UNK_ID in out[3].tolist()
    assert all(((a >= 0) & (a < token_vocab(pipe).vocabulary_size)).all() for a in out)


def test_joblib_round_trip_gives_identical_output(tmp_path, imdb_slice):
    pipe = text_pipeline({"min_freq": 2}).fit(imdb_slice["text"])
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    loaded = joblib.load(tmp_path / "pipe.joblib")
    a, b = pipe.transform(imdb_slice["text"]), loaded.transform(imdb_slice["text"])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert loaded.named_steps["token2index"].vocab_.idx_to_token == token_vocab(pipe).vocab_.idx_to_token


_VOCAB_SCRIPT = """
import hashlib, json, pandas as pd
from xfer.data import data_dir
from xfer.transforms import text_pipeline, token_vocab
f = pd.read_csv(data_dir() / "imdb" / "train.csv.gz", nrows=400)
pipe = text_pipeline({"min_freq": 1}).fit(f["text"])
itos = token_vocab(pipe).vocab_.idx_to_token
print(json.dumps([len(itos), hashlib.sha256("\\n".join(itos).encode()).hexdigest()]))
"""


def test_vocabulary_is_identical_across_processes_with_different_hash_seeds():
    results = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _VOCAB_SCRIPT], env=env, capture_output=True, text=True,
                             check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0][0] > 1000


def test_column_transformer_passes_normalised_categories(hotel_cfg, tmp_path):
    frame = load_frame(hotel_cfg["files"]["all"], hotel_cfg)
    pre = build_preprocessor({"min_freq": 1}, ["Browser_Used", "Device_Used"])
    assert isinstance(pre, ColumnTransformer)
    fit_preprocessor(pre, frame)
    ids, cats = apply_preprocessor(pre, frame)
    assert len(ids) == len(frame) == cats.shape[0] and cats.shape[1] == 2
    assert isinstance(ids[0], np.ndarray) and ids[0].dtype == np.int32
    assert set(cats[:, 0]) >= {"Chrome", "Firefox", "Internet Explorer", "Edge"}
    assert not {"Google Chrome", "IE", "InternetExplorer"} & set(cats[:, 0])
    joblib.dump(pre, tmp_path / "pre.joblib")  # the fitted ColumnTransformer survives a round trip
    again_ids, again_cats = apply_preprocessor(joblib.load(tmp_path / "pre.joblib"), frame)
    assert all(np.array_equal(a, b) for a, b in zip(ids, again_ids)) and (again_cats == cats).all()


def test_pad_and_unk_ids():
    t = Tok2Idx().fit([["<pad>", "<unk>", "a"]])
    assert t.vocab_.token_to_idx["<pad>"] == PAD_ID == 0 and t.vocab_.token_to_idx["<unk>"] == UNK_ID == 1
    assert t.vocabulary_size == 3


from hypothesis import given, settings, strategies as st  # noqa: E402

TEXT = st.lists(st.sampled_from(list("ab Z.,!'\\-<>/\t\n\x1c\xa0\u2003é日?") + ["<br />"]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_fast_tokenizer_equals_the_tutorial_rule(text):
    assert Tokenize(strip_html=False).transform([text])[0] == re.sub(
        f"([{re.escape(string.punctuation)}])", r" \1 ", text).split()
    literal = f"([{string.punctuation}])"  # the tutorial's unescaped pattern (backslash is not in it)
    assert Tokenize(split_pattern=literal, strip_html=False).transform([text])[0] == tutorial_tokens(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8), st.text(max_size=40))
def test_any_unicode_goes_through_the_pipeline_with_ids_in_range(train, new):
    pipe = text_pipeline({"min_freq": 1}).fit(pd.Series(train))
    size = token_vocab(pipe).vocabulary_size
    for ids in pipe.transform(pd.Series(train + [new, None])):
        assert ids.dtype == np.int32 and ((ids >= 0) & (ids < size)).all()


def test_general_split_pattern_uses_substitution():
    tok = Tokenize(split_pattern=r"(\d)", strip_html=False)
    assert tok.transform(["ab1cd 22"])[0] == ["ab", "1", "cd", "2", "2"]


# ------------------------------------------------------- the chunked (Arrow) tokenizer path
def _regex_tokens(tok: Tokenize, texts):
    return [tok._tokenizer()(t) for t in texts]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(TEXT, st.text(max_size=30)), max_size=12), st.booleans())
def test_chunked_tokenizer_equals_the_regex_on_many_texts(texts, strip_html):
    """Transform tokenizes each distinct whitespace-free chunk once (Arrow); the result must be
    the per-text regex's, whatever the whitespace (ASCII, \\x1c, NBSP, ideographic space)."""
    tok = Tokenize(strip_html=strip_html)
    with mock.patch.object(xfer_transforms, "_ARROW_MIN_TEXTS", 0):
        out = tok.transform(pd.Series(texts, dtype=object))
    assert [list(x) for x in out] == _regex_tokens(tok, texts)


def test_chunked_tokenizer_is_used_and_behaves_as_a_sequence(monkeypatch):
    texts = pd.Series(["Good movie. Really!", "", "  padded  ", "good, GOOD"], index=[10, 11, 12, 13])
    assert isinstance(Tokenize().transform(texts), pd.Series)  # 4 texts: the regex is quicker
    monkeypatch.setattr(xfer_transforms, "_ARROW_MIN_TEXTS", 4)
    out = Tokenize().transform(texts)
    assert isinstance(out, TokenizedCorpus) and len(out) == 4
    assert out[0] == ["Good", "movie", ".", "Really", "!"] and out[1] == [] and out[2] == ["padded"]
    assert out[-1] == ["good", ",", "GOOD"] and out[1:3] == [[], ["padded"]]
    with pytest.raises(IndexError):
        out[4]
    assert out.to_series().index.tolist() == [10, 11, 12, 13]
    assert out.counts() == Counter({"Good": 1, "movie": 1, ".": 1, "Really": 1, "!": 1, "padded": 1, "good": 1,
                                    ",": 1, "GOOD": 1})
    # a general (non character class) pattern keeps the plain Series of lists
    assert isinstance(Tokenize(split_pattern=r"(\d)").transform(texts), pd.Series)


def test_tok2idx_gives_the_same_ids_from_a_corpus_and_from_token_lists():
    texts = pd.read_csv(DATA / "imdb" / "test.csv.gz", nrows=300)["text"].str.lower()
    corpus = Tokenize().transform(texts)
    fast = Tok2Idx(min_freq=2, max_size=500).fit(corpus)
    slow = Tok2Idx(min_freq=2, max_size=500).fit(corpus.to_series())
    assert fast.vocab_.idx_to_token == slow.vocab_.idx_to_token
    assert fast.n_tokens_seen_ == slow.n_tokens_seen_
    for a, b in zip(fast.transform(corpus), slow.transform(corpus.to_series())):
        assert a.dtype == b.dtype == np.int32 and np.array_equal(a, b)


def test_chunked_tokenizer_in_threads_equals_one_part(monkeypatch):
    import xfer.transforms as T

    texts = pd.read_csv(DATA / "imdb" / "test.csv.gz", nrows=300)["text"]
    one = Tokenize().transform(texts)
    monkeypatch.setattr(T, "_PART_SIZE", 40)
    monkeypatch.setattr(T, "_THREADS", 3)
    calls = []
    chunk_tokens = T._chunk_tokens
    monkeypatch.setattr(T, "_chunk_tokens", lambda arr, classes: calls.append(len(arr)) or chunk_tokens(arr, classes))
    three = Tokenize().transform(texts)
    assert sorted(calls) == [100, 100, 100]  # really in three parts
    assert len(three.parts) == 3 and len(one.parts) == 1  # parts are kept, not merged token by token
    merged, one_types = three._type_table()[0], one._type_table()[0]
    assert len(set(merged.to_pylist())) == len(merged) == len(one_types)  # one row per distinct token
    assert three.tolist() == one.tolist() == _regex_tokens(Tokenize(), texts)
    a, b = Tok2Idx(min_freq=2).fit(one), Tok2Idx(min_freq=2).fit(three)
    assert a.vocab_.idx_to_token == b.vocab_.idx_to_token
    assert all(np.array_equal(x, y) for x, y in zip(a.transform(one), b.transform(three)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "B", "é", "ab", "<pad>", "<unk>", "日"]), max_size=12)
                .map(" ".join), min_size=1, max_size=10),
       st.integers(1, 3), st.sampled_from([None, 0, 1, 3]))
def test_vocabulary_from_a_corpus_equals_gluonnlps_own(texts, min_freq, max_size):
    """The corpus path orders the vocabulary itself (numpy/Arrow) and fills a gluonnlp.Vocab;
    it must equal the Vocab gluonnlp builds from a Counter: ties, min_freq, max_size, specials."""
    with mock.patch.object(xfer_transforms, "_ARROW_MIN_TEXTS", 0):
        corpus = Tokenize(split_pattern=r"([,])").transform(pd.Series(texts))
    assert isinstance(corpus, TokenizedCorpus)
    fast = Tok2Idx(min_freq=min_freq, max_size=max_size).fit(corpus)
    slow = Tok2Idx(min_freq=min_freq, max_size=max_size).fit(corpus.to_series())
    assert fast.vocab_.idx_to_token == slow.vocab_.idx_to_token
    assert dict(fast.vocab_.token_to_idx) == dict(slow.vocab_.token_to_idx)
    assert fast.vocab_["never-seen"] == slow.vocab_["never-seen"] == UNK_ID
    assert fast.n_tokens_seen_ == slow.n_tokens_seen_
