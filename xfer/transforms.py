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
import os
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
        character class (the default) and there are at least 64 texts, else a Series of lists."""
        s = as_series(X)
        fast = self._transform_chunks(s)
        if fast is not None:
            return fast
        tok = self._tokenizer()
        return pd.Series([tok(t) for t in s], index=s.index, dtype=object)

    def _transform_chunks(self, s: pd.Series) -> "TokenizedCorpus | None":
        """Tokenize every distinct whitespace-separated chunk once, in Arrow (C++).

        With a character-class pattern no token crosses whitespace, so a text's tokens are
        the tokens of its chunks in order. Arrow splits the texts on ASCII whitespace and
        dictionary-encodes the ~6M chunks of IMDB into ~150k distinct ones; a distinct chunk
        holding class characters or other whitespace is split once more (class characters
        padded with spaces, other whitespace made a space), the rest are one token each.
        None when the pattern is not such a class, pyarrow is missing, or the input is not
        all valid strings: the regex path then runs, with its own errors."""
        m = _CHAR_CLASS.match(self.split_pattern or PUNCT_PATTERN)
        classes = _chunk_classes(m.group(1)) if m and self._compiled()[1] else None
        if classes is None or len(s) < max(1, _ARROW_MIN_TEXTS):  # a few texts: the regex is quicker
            return None
        try:
            import pyarrow as pa

            texts = s.tolist()
            if self.strip_html:
                texts = [HTML_BREAK.sub(" ", t) for t in texts]
            # Arrow's kernels release the GIL: large inputs are split in parts tokenized in threads
            n_parts = min(_THREADS, max(1, len(texts) // _PART_SIZE))
            bounds = np.linspace(0, len(texts), n_parts + 1).astype(int)
            arrays = [pa.array(texts[a:b], type=pa.large_string()) for a, b in zip(bounds[:-1], bounds[1:])]
        except (ImportError, TypeError, ValueError, UnicodeError):
            return None
        if any(a.null_count for a in arrays):
            return None
        if n_parts == 1:
            parts = [_chunk_tokens(arrays[0], classes)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n_parts) as pool:
                parts = list(pool.map(lambda a: _chunk_tokens(a, classes), arrays))
        return TokenizedCorpus.concat(parts, index=s.index)

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
        if isinstance(X, TokenizedCorpus):  # already in vocabulary order, counted in numpy
            tokens, counts = X.by_frequency()
            special = [tokens.index(t) for t in (PAD, UNK) if t in tokens]  # literal "<pad>"/"<unk>"
            keep = counts >= int(self.min_freq)
            keep[special] = False
            itos = [t for t, k in zip(tokens, keep.tolist()) if k][:self.max_size or None]
            self.vocab_ = _vocab(itos)
            self.n_tokens_seen_ = int(counts.sum() - counts[special].sum())
            return self
        counter = count_tokens(X)
        for special in (PAD, UNK):
            counter.pop(special, None)
        self.vocab_ = nlp.Vocab(counter, max_size=self.max_size, min_freq=int(self.min_freq),
                                unknown_token=UNK, padding_token=PAD, bos_token=None, eos_token=None,
                                token_to_idx={PAD: PAD_ID, UNK: UNK_ID})
        self.n_tokens_seen_ = int(sum(counter.values()))
        return self

    def with_vocabulary(self, idx_to_token: Sequence[str]) -> "Tok2Idx":
        """Set the fitted vocabulary to ``idx_to_token`` (which must start with <pad>, <unk>)."""
        itos = list(idx_to_token)
        if itos[:2] != [PAD, UNK] or len(set(itos)) != len(itos):
            raise ValueError("a vocabulary starts with <pad>, <unk> and holds each token once")
        self.vocab_ = _vocab(itos[2:])
        self.n_tokens_seen_ = getattr(self, "n_tokens_seen_", 0)
        return self

    def transform(self, X):
        check_is_fitted(self, "vocab_")
        if isinstance(X, TokenizedCorpus):  # one hash lookup per token type (in Arrow), then numpy
            return pd.Series(X.id_arrays(self.vocab_.idx_to_token, UNK_ID), index=X.index, dtype=object)
        get = self.vocab_.token_to_idx.get
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
        counts = count_tokens(X)
        total = sum(counts.values())
        unk = sum(n for t, n in counts.items() if t not in t2i)
        return unk / total if total else 0.0


class TokenizedCorpus(SequenceABC):
    """The token lists of many texts, stored compactly: what :class:`Tokenize` returns.

    The texts come in parts (one per tokenizer thread), each with its own table of distinct
    tokens: in a part, ``types`` is an Arrow string array of its distinct tokens,
    ``token_types`` the index into ``types`` of every token of every text, and text ``i``'s
    tokens are ``token_types[offsets[i]:offsets[i + 1]]``. Parts are never merged token by
    token: counting and id lookup merge only the small type tables. It is a sequence of
    ``list[str]`` (``corpus[i]``, iteration, ``len``); :class:`Tok2Idx` reads the arrays
    directly, without making a Python string per token.
    """

    def __init__(self, types, token_types: np.ndarray, offsets: np.ndarray, index=None):
        self._set_parts([(types, token_types, np.asarray(offsets, dtype=np.int64))], index)

    def _set_parts(self, parts: list, index) -> None:
        self.parts = parts
        #: the first text of each part, then the number of texts
        self._starts = np.cumsum([0] + [len(offsets) - 1 for _, _, offsets in parts])
        self.index = index if index is not None else pd.RangeIndex(int(self._starts[-1]))
        self._strings: list[list[str]] | None = None
        self._types = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"text {i} out of range for {len(self)} texts")
        if self._strings is None:
            self._strings = [types.to_pylist() for types, _, _ in self.parts]
        starts = self._starts
        k = int(np.searchsorted(starts, i, side="right")) - 1
        _, token_types, offsets = self.parts[k]
        strings, j = self._strings[k], i - starts[k]
        return [strings[t] for t in token_types[offsets[j]:offsets[j + 1]].tolist()]

    def __getstate__(self):
        return {**self.__dict__, "_strings": None, "_types": None}

    @classmethod
    def concat(cls, parts: Sequence["TokenizedCorpus"], index=None) -> "TokenizedCorpus":
        """One corpus holding the texts of ``parts`` in order (their parts side by side)."""
        out = cls.__new__(cls)
        out._set_parts([part for corpus in parts for part in corpus.parts], index)
        return out

    def tolist(self) -> list[list[str]]:
        return list(self)

    def to_series(self) -> pd.Series:
        return pd.Series(self.tolist(), index=self.index, dtype=object)

    def counts(self) -> Counter:
        """How often each token occurs across all texts."""
        tokens, counts = self.by_frequency()
        return Counter(dict(zip(tokens, counts.tolist())))

    def _type_table(self):
        """(the distinct tokens of all parts as one Arrow array, and for each part the position
        of each of its types in that array); computed once (fit and transform both read it)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if getattr(self, "_types", None) is None:
            if len(self.parts) == 1:
                types = self.parts[0][0]
                self._types = types, [None]
            else:
                merged = pc.dictionary_encode(pa.concat_arrays([types for types, _, _ in self.parts]))
                to_merged = merged.indices.to_numpy(zero_copy_only=False)
                bounds = np.cumsum([0] + [len(types) for types, _, _ in self.parts])
                self._types = merged.dictionary, [to_merged[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return self._types

    def by_frequency(self) -> tuple[list[str], np.ndarray]:
        """The tokens that occur, by count (descending) then token (code point order, as
        Python compares strings; UTF-8 byte order is the same), with their counts."""
        import pyarrow as pa
        import pyarrow.compute as pc

        types, positions = self._type_table()
        totals = np.zeros(len(types), dtype=np.int64)
        for (part_types, token_types, _), at in zip(self.parts, positions):
            # a part's types are distinct: no position repeats within ``at``
            totals[slice(None) if at is None else at] += np.bincount(token_types, minlength=len(part_types))
        seen = np.flatnonzero(totals)
        by_token = seen[pc.sort_indices(pc.take(types, pa.array(seen))).to_numpy(zero_copy_only=False)]
        order = by_token[np.argsort(-totals[by_token], kind="stable")]
        return pc.take(types, pa.array(order)).to_pylist(), totals[order]

    def id_arrays(self, idx_to_token: Sequence[str], unknown: int) -> list[np.ndarray]:
        """Each text's tokens as positions in ``idx_to_token`` (``unknown`` if absent), int32."""
        import pyarrow as pa
        import pyarrow.compute as pc

        types, positions = self._type_table()
        lut = pc.index_in(types, value_set=pa.array(idx_to_token, type=pa.large_string())).fill_null(unknown)
        lut = lut.to_numpy(zero_copy_only=False).astype(np.int32)
        out = []
        for (_, token_types, offsets), at in zip(self.parts, positions):
            part_lut = lut if at is None else lut[at]
            ids = part_lut[token_types] if len(token_types) else np.zeros(0, dtype=np.int32)
            bounds = offsets.tolist()
            out.extend(ids[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
        return out


def count_tokens(X) -> Counter:
    """How often each token occurs in ``X`` (a TokenizedCorpus or token lists)."""
    if isinstance(X, TokenizedCorpus):
        return X.counts()
    return Counter(chain.from_iterable(as_series(X)))


@functools.lru_cache(maxsize=None)
def _all_code_points() -> str:
    return "".join(map(chr, chain(range(0xD800), range(0xE000, 0x110000))))


_THREADS = min(4, os.cpu_count() or 1)
_PART_SIZE = 4096  # texts per thread at least
_ARROW_MIN_TEXTS = 64  # below this, Arrow's fixed cost per call (~5 ms) exceeds the regex's


def _chunk_tokens(arr, classes: tuple[str, str, str]) -> "TokenizedCorpus":
    """Tokenize an Arrow string array chunk by distinct chunk (see Tokenize._transform_chunks)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    punct, space, special = classes
    lists = pc.ascii_split_whitespace(arr)
    encoded = pc.dictionary_encode(lists.flatten())
    chunks = encoded.dictionary
    # chunk k's tokens are types[starts[k] : starts[k] + lens[k]]; a plain chunk is its own type
    starts = np.arange(len(chunks), dtype=np.int64)
    lens = np.ones(len(chunks), dtype=np.int32)
    lens[pc.equal(pc.binary_length(chunks), 0).to_numpy(zero_copy_only=False)] = 0  # at leading/trailing space
    hard = np.flatnonzero(pc.match_substring_regex(chunks, special).to_numpy(zero_copy_only=False))
    extra = pa.array([], type=pa.large_string())
    if len(hard):
        spaced = pc.replace_substring_regex(pc.take(chunks, pa.array(hard)), space, " ")
        parts = pc.ascii_split_whitespace(pc.replace_substring_regex(spaced, f"({punct})", r" \1 "))
        flat = parts.flatten()
        keep = pc.greater(pc.binary_length(flat), 0)
        extra = flat.filter(keep)
        lens[hard] = np.bincount(pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)[
            keep.to_numpy(zero_copy_only=False)], minlength=len(hard))
        starts[hard] = len(chunks) + np.cumsum(lens[hard]) - lens[hard]
    # each distinct chunk's token list (as ids of distinct tokens), then one list per occurrence
    distinct = pc.dictionary_encode(pa.concat_arrays([chunks, extra]))  # a token may come from many chunks
    bounds = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
    positions = np.repeat(starts - bounds[:-1], lens) + np.arange(bounds[-1])  # into [chunks, extra]
    chunk_tokens = pa.LargeListArray.from_arrays(pa.array(bounds),
                                                 pa.array(distinct.indices.to_numpy(zero_copy_only=False)[positions]))
    per_occurrence = pc.take(chunk_tokens, encoded.indices)
    offsets = np.asarray(per_occurrence.offsets)[np.asarray(lists.offsets)]
    return TokenizedCorpus(distinct.dictionary, per_occurrence.flatten().to_numpy(zero_copy_only=False), offsets)


def _re2_class(chars: Iterable[str]) -> str:
    """An RE2 character class matching exactly ``chars`` (code points as \\x{..} ranges)."""
    points = sorted({ord(c) for c in chars})
    ranges, i = [], 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        ranges.append(f"\\x{{{points[i]:x}}}" + (f"-\\x{{{points[j]:x}}}" if j > i else ""))
        i = j + 1
    return "[" + "".join(ranges) + "]"


@functools.lru_cache(maxsize=16)
def _chunk_classes(body: str) -> tuple[str, str, str] | None:
    """RE2 classes for the chunked tokenizer of the Python character class ``[body]``: its
    members, the whitespace that Arrow's ASCII split leaves inside chunks (what Python's
    ``str.split`` and ``\\s`` also split on), and both together. None if the class holds
    whitespace (then chunks are not independent)."""
    members = re.findall(f"[{body}]", _all_code_points())
    if not members or any(c.isspace() for c in members):
        return None
    space = [c for c in _all_code_points() if c.isspace() and c not in " \t\n\v\f\r"]
    return _re2_class(members), _re2_class(space), _re2_class(members + space)


def _vocab(tokens: Sequence[str]):
    """A gluonnlp.Vocab of ``<pad>`` = 0, ``<unk>`` = 1, then ``tokens`` in the given order.

    gluonnlp builds a Vocab only from a Counter, sorting it in Python; the order is known
    here, so the tokens are appended to the two-token Vocab's index (its two attributes,
    as its own constructor fills them)."""
    import gluonnlp as nlp

    vocab = nlp.Vocab(None, unknown_token=UNK, padding_token=PAD, bos_token=None, eos_token=None,
                      token_to_idx={PAD: PAD_ID, UNK: UNK_ID})
    vocab._idx_to_token.extend(tokens)
    vocab._token_to_idx.update(zip(tokens, range(2, 2 + len(tokens))))
    return vocab


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
    from .schema import section

    cfg = section("transforms", cfg)
    steps = [("null_impute", NullImputer(fill_value=cfg["fill_value"]))]
    if cfg["lowercase"]:
        steps.append(("lower_case", LowerCaser()))
    steps.append(("tokenize", Tokenize(split_pattern=cfg["split_pattern"], strip_html=cfg["strip_html"])))
    steps.append(("token2index", Tok2Idx(min_freq=cfg["min_freq"], max_size=cfg["max_size"])))
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
