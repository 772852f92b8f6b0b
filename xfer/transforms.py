"""Text preprocessing as scikit-learn transformers.

``NullImputer -> LowerCaser -> Tokenize -> Tok2Idx`` turn raw review text into
integer id arrays. They follow scikit-learn's estimator conventions (parameters
only set in ``__init__``, fitted state ends in ``_``, ``clone``/``get_params``
work, ``NotFittedError`` before ``fit``) and pickle with joblib.

Differences from the tutorial this grew out of: ``NullImputer`` works on 1-D
input directly, every step has ``fit``, and ``Tok2Idx`` assigns ids by
(frequency desc, token) so the vocabulary is the same in every process,
whatever ``PYTHONHASHSEED`` is.
"""
from __future__ import annotations

import functools
import operator
import re
import string
from collections import Counter
from collections.abc import Sequence as SequenceABC
from itertools import chain, repeat
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .errors import ConfigError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
#: the tutorial's split pattern: every ASCII punctuation character is its own token
PUNCT_PATTERN = f"([{re.escape(string.punctuation)}])"
HTML_BREAK = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
#: a pattern that is one capture group around one character class, e.g. PUNCT_PATTERN
_CHAR_CLASS = re.compile(r"^\(\[((?:[^\]\\]|\\.)+)\]\)$", re.DOTALL)


def as_series(X: Any) -> pd.Series:
    """Accept a Series, a one-column DataFrame, a list or a 1-D/2-D (n, 1) array."""
    if isinstance(X, pd.Series):
        return X
    if isinstance(X, TokenizedCorpus):
        return X.to_series()
    if isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(f"expected one text column, got {X.shape[1]} columns")
        return X.iloc[:, 0]
    arr = np.asarray(X, dtype=object) if not isinstance(X, np.ndarray) else X
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        # a list of token lists becomes a 2-D object array only when lengths agree
        return pd.Series(list(X), dtype=object)
    return pd.Series(arr, dtype=object)


class _Stateless(TransformerMixin, BaseEstimator):
    """Base for steps that learn nothing: ``fit`` only validates and returns self."""

    def fit(self, X, y=None):
        as_series(X)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def _more_tags(self):
        return {"stateless": True, "X_types": ["string"]}


class NullImputer(_Stateless):
    """Replace missing values (None/NaN) by ``fill_value``; non-strings become strings."""

    def __init__(self, fill_value: str = "null"):
        self.fill_value = fill_value

    def transform(self, X):
        s = as_series(X)
        fill = self.fill_value
        return pd.Series([v if isinstance(v, str) else (fill if _is_missing(v) else str(v)) for v in s],
                         index=s.index, dtype=object)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


class LowerCaser(_Stateless):
    """Lower-case every string (Unicode-aware ``str.lower``)."""

    def transform(self, X):
        s = as_series(X)
        return pd.Series([v.lower() for v in s], index=s.index, dtype=object)


class Tokenize(_Stateless):
    """Split text into tokens: ``split_pattern`` matches become their own tokens,
    then the text is split on whitespace (the tutorial's rule). With ``strip_html``
    the HTML line breaks (``<br />``) found in IMDB reviews are removed first.
    """

    def __init__(self, split_pattern: str | None = None, strip_html: bool = True):
        self.split_pattern = split_pattern
        self.strip_html = strip_html

    def _compiled(self) -> tuple[re.Pattern, bool]:
        """(regex, is_findall): a single-character-class pattern such as the default
        becomes one ``findall`` of ``[class]|[^\\s class]+``, which yields exactly the
        tokens of ``sub(r" \\1 ", text).split()`` without building the spaced copy."""
        pattern = self.split_pattern or PUNCT_PATTERN
        cached = getattr(self, "_re_cache", None)
        if cached is None or cached[0] != pattern:
            m = _CHAR_CLASS.match(pattern)
            if m and not m.group(1).startswith("^"):
                body = m.group(1)
                cached = (pattern, re.compile(f"[{body}]|[^\\s{body}]+"), True)
            else:
                cached = (pattern, re.compile(pattern), False)
            self._re_cache = cached
        return cached[1], cached[2]

    def tokenize(self, text: str) -> list[str]:
        return self._tokenizer()(text)

    def _tokenizer(self):
        regex, is_findall = self._compiled()
        split = regex.findall if is_findall else (lambda t: regex.sub(r" \1 ", t).split())
        if not self.strip_html:
            return split
        html = HTML_BREAK.sub
        return lambda t: split(html(" ", t))

    def transform(self, X):
        """Token lists, one per text: a :class:`TokenizedCorpus` when the split pattern is a
        character class (the default), else a Series of lists."""
        s = as_series(X)
        fast = self._transform_chunks(s)
        if fast is not None:
            return fast
        tok = self._tokenizer()
        return pd.Series([tok(t) for t in s], index=s.index, dtype=object)

    def _transform_chunks(self, s: pd.Series) -> "TokenizedCorpus | None":
        """Tokenize every distinct whitespace-separated chunk once.

        With a character-class pattern no token crosses whitespace, so a text's tokens are
        the tokens of its chunks in order. Arrow (C++) splits on ASCII whitespace and
        dictionary-encodes the ~7M chunks of IMDB into ~150k distinct ones; only chunks
        holding a class character or non-ASCII whitespace go through the Python regex,
        the rest are one token each. None when the pattern is not a character class,
        pyarrow is missing, or the input is not all valid strings (the regex path then
        runs, with its own errors)."""
        m = _CHAR_CLASS.match(self.split_pattern or PUNCT_PATTERN)
        special = _chunk_special_class(m.group(1)) if m and self._compiled()[1] else None
        if special is None or len(s) == 0:
            return None
        try:
            import pyarrow as pa
            import pyarrow.compute as pc

            texts = s.tolist()
            if self.strip_html:
                texts = [HTML_BREAK.sub(" ", t) for t in texts]
            arr = pa.array(texts, type=pa.large_string())
        except (ImportError, TypeError, ValueError, UnicodeError):
            return None
        if arr.null_count:
            return None
        lists = pc.ascii_split_whitespace(arr)
        encoded = pc.dictionary_encode(lists.flatten())
        chunks = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        # chunk k's tokens are types[starts[k] : starts[k] + lens[k]]; a plain chunk is its own type
        types = list(chunks)
        starts = np.arange(len(chunks), dtype=np.int64)
        lens = np.ones(len(chunks), dtype=np.int64)
        split = self._compiled()[0].findall
        for k in np.flatnonzero(pc.match_substring_regex(encoded.dictionary, special).to_numpy(zero_copy_only=False)):
            toks = split(chunks[k])
            starts[k], lens[k] = len(types), len(toks)
            types.extend(toks)
        if "" in chunks:  # Arrow yields empty chunks at leading/trailing whitespace: no tokens
            lens[chunks.index("")] = 0
        per_chunk = lens[codes]
        ends = np.cumsum(per_chunk)
        token_types = np.repeat(starts[codes] - (ends - per_chunk), per_chunk) + np.arange(int(ends[-1]) if len(ends) else 0)
        offsets = np.concatenate([[0], ends])[np.asarray(lists.offsets)]
        return TokenizedCorpus(types, token_types, offsets, index=s.index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_re_cache", None)
        return state


class Tok2Idx(TransformerMixin, BaseEstimator):
    """Map token lists to ``int32`` id arrays with a deterministic vocabulary.

    Ids: ``<pad>`` = 0, ``<unk>`` = 1, then tokens by frequency (descending) and,
    among equal counts, by the token string. Tokens seen fewer than ``min_freq``
    times, or beyond ``max_size`` (not counting the two special tokens), map to
    ``<unk>``. The fitted vocabulary is a :class:`gluonnlp.Vocab` in ``vocab_``.
    """

    def __init__(self, min_freq: int = 1, max_size: int | None = None):
        self.min_freq = min_freq
        self.max_size = max_size

    def fit(self, X, y=None):
        import gluonnlp as nlp

        if int(self.min_freq) < 1:
            raise ValueError(f"min_freq must be >= 1, got {self.min_freq}")
        if isinstance(X, TokenizedCorpus):
            counter = X.counts()
        else:
            counter = Counter(chain.from_iterable(as_series(X)))
        for special in (PAD, UNK):
            counter.pop(special, None)
        self.vocab_ = nlp.Vocab(counter, max_size=self.max_size, min_freq=int(self.min_freq),
                                unknown_token=UNK, padding_token=PAD, bos_token=None, eos_token=None,
                                token_to_idx={PAD: PAD_ID, UNK: UNK_ID})
        self.n_tokens_seen_ = int(sum(counter.values()))
        return self

    def with_vocabulary(self, idx_to_token: Sequence[str]) -> "Tok2Idx":
        """Set the fitted vocabulary to ``idx_to_token`` (which must start with <pad>, <unk>)."""
        import gluonnlp as nlp

        itos = list(idx_to_token)
        if itos[:2] != [PAD, UNK] or len(set(itos)) != len(itos):
            raise ValueError("a vocabulary starts with <pad>, <unk> and holds each token once")
        counter = Counter({t: 1 for t in itos[2:]})
        self.vocab_ = nlp.Vocab(counter, max_size=None, min_freq=1, unknown_token=UNK, padding_token=PAD,
                                bos_token=None, eos_token=None,
                                token_to_idx={t: i for i, t in enumerate(itos)})
        self.n_tokens_seen_ = getattr(self, "n_tokens_seen_", 0)
        return self

    def transform(self, X):
        check_is_fitted(self, "vocab_")
        get = self.vocab_.token_to_idx.get
        if isinstance(X, TokenizedCorpus):  # one dict lookup per distinct token type, then numpy
            lut = np.fromiter(map(get, X.types, repeat(UNK_ID)), dtype=np.int32, count=len(X.types))
            ids = lut[X.token_types] if len(X.token_types) else np.zeros(0, dtype=np.int32)
            return pd.Series(np.split(ids, X.offsets[1:-1]), index=X.index, dtype=object)
        s = as_series(X)
        out = [np.fromiter(map(get, toks, repeat(UNK_ID)), dtype=np.int32, count=len(toks)) for toks in s]
        return pd.Series(out, index=s.index, dtype=object)

    def inverse_transform(self, X):
        check_is_fitted(self, "vocab_")
        itos = self.vocab_.idx_to_token
        return pd.Series([[itos[int(i)] for i in ids] for ids in as_series(X)], dtype=object)

    @property
    def vocabulary_size(self) -> int:
        check_is_fitted(self, "vocab_")
        return len(self.vocab_)

    def oov_rate(self, X) -> float:
        """Share of tokens in ``X`` (token lists) that map to ``<unk>``."""
        check_is_fitted(self, "vocab_")
        t2i = self.vocab_.token_to_idx
        total = unk = 0
        for toks in as_series(X):
            total += len(toks)
            unk += sum(1 for t in toks if t not in t2i)
        return unk / total if total else 0.0


class TokenizedCorpus(SequenceABC):
    """The token lists of many texts, stored compactly: what :class:`Tokenize` returns.

    ``types`` holds token strings (a string may occur more than once), ``token_types``
    the index into ``types`` of every token of every text, and text ``i``'s tokens are
    ``token_types[offsets[i]:offsets[i + 1]]``. It is a sequence of ``list[str]``
    (``corpus[i]``, iteration, ``len``); :class:`Tok2Idx` reads the arrays directly.
    """

    def __init__(self, types: list[str], token_types: np.ndarray, offsets: np.ndarray, index=None):
        self.types, self.token_types, self.offsets = types, token_types, np.asarray(offsets, dtype=np.int64)
        self.index = index if index is not None else pd.RangeIndex(len(self.offsets) - 1)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"text {i} out of range for {len(self)} texts")
        types = self.types
        return [types[k] for k in self.token_types[self.offsets[i]:self.offsets[i + 1]].tolist()]

    def tolist(self) -> list[list[str]]:
        return list(self)

    def to_series(self) -> pd.Series:
        return pd.Series(self.tolist(), index=self.index, dtype=object)

    def counts(self) -> Counter:
        """How often each token occurs across all texts."""
        per_type = np.bincount(self.token_types, minlength=len(self.types)) if len(self.token_types) else []
        counter: Counter = Counter()
        for token, n in zip(self.types, per_type.tolist() if len(per_type) else []):
            if n:
                counter[token] += n
        return counter


@functools.lru_cache(maxsize=None)
def _all_code_points() -> str:
    return "".join(map(chr, chain(range(0xD800), range(0xE000, 0x110000))))


@functools.lru_cache(maxsize=16)
def _chunk_special_class(body: str) -> str | None:
    """For the tokenizer of the character class ``[body]``: an RE2 class of the characters
    that make a whitespace-free chunk need the regex (class members, and the whitespace
    that Arrow's ASCII split leaves in place), or None if the class holds whitespace
    (then chunks are not independent)."""
    members = re.findall(f"[{body}]", _all_code_points())
    if any(c.isspace() for c in members):
        return None
    extra = [c for c in _all_code_points() if c.isspace() and c not in " \t\n\v\f\r"]
    points = sorted({ord(c) for c in members + extra})
    ranges, i = [], 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        ranges.append(f"\\x{{{points[i]:x}}}" + (f"-\\x{{{points[j]:x}}}" if j > i else ""))
        i = j + 1
    return "[" + "".join(ranges) + "]"


class AsColumn(_Stateless):
    """Turn a 1-D sequence of objects into an ``(n, 1)`` object array (for ColumnTransformer)."""

    def transform(self, X):
        s = as_series(X)
        out = np.empty((len(s), 1), dtype=object)
        out[:, 0] = list(s)
        return out


class CategoryImputer(_Stateless):
    """Missing categorical values become ``fill_value``; values become strings."""

    def __init__(self, fill_value: str = "<missing>"):
        self.fill_value = fill_value

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object))
        return frame.astype(object).where(frame.notna(), self.fill_value).astype(str).to_numpy(dtype=object)


def text_pipeline(cfg: Mapping | None = None) -> Pipeline:
    """The tutorial's four steps as a Pipeline, configured by ``conf/transforms/*.yaml``."""
    cfg = dict(cfg or {})
    steps = [("null_impute", NullImputer(fill_value=cfg.get("fill_value", "null")))]
    if cfg.get("lowercase", True):
        steps.append(("lower_case", LowerCaser()))
    steps.append(("tokenize", Tokenize(split_pattern=cfg.get("split_pattern"),
                                       strip_html=bool(cfg.get("strip_html", True)))))
    steps.append(("token2index", Tok2Idx(min_freq=int(cfg.get("min_freq", 1)),
                                         max_size=cfg.get("max_size"))))
    return Pipeline(steps)


def build_preprocessor(cfg: Mapping | None = None, categorical: Sequence[str] = (),
                       text_column: str = "text"):
    """A text Pipeline, or a ColumnTransformer that also passes ``categorical`` columns.

    The ColumnTransformer variant returns an ``(n, 1 + len(categorical))`` object
    array: column 0 holds the id arrays, the rest the cleaned category strings.
    """
    pipe = text_pipeline(cfg)
    if not categorical:
        return pipe
    pipe.steps.append(("as_column", AsColumn()))
    return ColumnTransformer(
        [("text", pipe, text_column), ("categorical", CategoryImputer(), list(categorical))],
        remainder="drop", sparse_threshold=0, verbose_feature_names_out=False)


def fit_preprocessor(pre, frame: pd.DataFrame):
    """Fit on a standard frame (``text`` + categorical columns). A vocabulary with no token
    besides ``<pad>``/``<unk>`` would train a constant model: that is an error."""
    pre = pre.fit(_input(pre, frame))
    vocab = token_vocab(pre)
    if vocab.vocabulary_size <= 2:
        raise ConfigError(f"transforms: the vocabulary is empty (no token occurs min_freq={vocab.min_freq} times "
                          f"in {len(frame)} training reviews)")
    return pre


def _input(pre, frame: pd.DataFrame):
    return frame if isinstance(pre, ColumnTransformer) else frame["text"]


def apply_preprocessor(pre, frame: pd.DataFrame) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Transform a frame into (list of id arrays, categorical object array or None)."""
    out = pre.transform(_input(pre, frame))
    if isinstance(pre, ColumnTransformer):
        return list(out[:, 0]), out[:, 1:]
    return list(out), None


def token_vocab(pre) -> Tok2Idx:
    """The fitted Tok2Idx inside a Pipeline or ColumnTransformer."""
    if isinstance(pre, ColumnTransformer):
        pre = pre.named_transformers_["text"]
    return pre.named_steps["token2index"]


def categorical_columns(pre) -> list[str]:
    """The categorical columns a fitted preprocessor passes through (none for a plain Pipeline)."""
    if not isinstance(pre, ColumnTransformer):
        return []
    for name, _, cols in pre.transformers_:
        if name == "categorical":
            return list(cols)
    return []


def tokens_of(pre, texts: Iterable[str]) -> pd.Series:
    """Tokens (before id lookup) that the fitted preprocessor produces for ``texts``."""
    if isinstance(pre, ColumnTransformer):
        pre = pre.named_transformers_["text"]
    head = Pipeline([s for s in pre.steps if s[0] not in ("token2index", "as_column")])
    return head.transform(pd.Series(list(texts), dtype=object))
