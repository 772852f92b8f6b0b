"""Datasets described by config: CSV -> validated frame -> seeded splits.

Every loaded split is a DataFrame with the columns ``id``, ``text``, ``label`` (0/1)
plus the dataset's categorical columns under their own names. Anything wrong with
the input raises :class:`~xfer.errors.DataError` with one line naming the file,
the column/row and the problem.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .errors import ConfigError, DataError, cli_main
from .schema import section

log = logging.getLogger(__name__)

#: where the development data lives when XFER_DATA_DIR is not set: ``../shared/data``
#: beside the project root (the directory holding ``pyproject.toml``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MISSING_CATEGORY = "<missing>"


def data_dir() -> Path:
    """The data root: ``$XFER_DATA_DIR`` or ``../shared/data`` beside the project."""
    env = os.environ.get("XFER_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()


@dataclass
class Dataset:
    """Train/validation/test frames of one dataset plus what is known about them."""

    name: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    categorical: list[str] = field(default_factory=list)
    checksum: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    #: the texts of the whole training split before ``n_train`` took its subset: unlabelled text of
    #: the target domain (domain adaptation and self-training read it; no network ever trains on
    #: the labels of the rows outside the subset)
    pool_text: list[str] = field(default_factory=list)
    #: the labels of ``pool_text``, for one diagnostic only: how many of self-training's
    #: pseudo-labels agree with the labels ``n_train`` withheld
    pool_label: list[int] = field(default_factory=list)

    def splits(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "val": self.val, "test": self.test}


# --------------------------------------------------------------------------- reading
@contextlib.contextmanager
def made_dirs(directory: str | Path):
    """Make ``directory`` and its missing parents; when the block fails, remove the ones this made
    again (deepest first, each only while empty): a failed write leaves no empty directories."""
    directory = Path(directory)
    made = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield directory
    except BaseException:
        for d in made:
            with contextlib.suppress(OSError):  # something else wrote into it meanwhile: it stays
                d.rmdir()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary sibling of ``path`` to fill; when the block succeeds it replaces ``path``
    in one rename, when it fails it is removed (and the parents made for it): ``path`` is either
    complete or untouched."""
    path = Path(path)
    with made_dirs(path.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file; remembered per (path, size, mtime), so jobs in one process hash
    the 100 MB of IMDB once."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int, chunk: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _raw_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read()


def _bad_bytes_message(path: Path, exc: UnicodeDecodeError) -> str:
    try:
        raw = _raw_bytes(path)
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return f"{path}: undecodable bytes at line {line} (not UTF-8: {e.reason} at byte {e.start})"
    except Exception:  # pragma: no cover - fall back to pandas' message
        pass
    return f"{path}: undecodable bytes (not UTF-8: {exc.reason})"


def read_csv(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read a (possibly gzipped) UTF-8 CSV and check that ``columns`` are present."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (set XFER_DATA_DIR or the data.files.* config)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        frame = pd.read_csv(path, encoding="utf-8", dtype=str, keep_default_na=True,
                            compression="infer", on_bad_lines="error")
    except UnicodeDecodeError as e:
        raise DataError(_bad_bytes_message(path, e)) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header or rows)") from None
    except pd.errors.ParserError as e:
        msg = str(e).replace("Error tokenizing data. C error: ", "").strip()
        raise DataError(f"{path}: malformed CSV: {msg}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read file (corrupt or not gzip/CSV): {e}") from None
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (found: {', '.join(map(str, frame.columns))})")
    return frame


# --------------------------------------------------------------------------- labels
_RULE = re.compile(r"^\s*(\w+)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_OPS = {">=": np.greater_equal, "<=": np.less_equal, "==": np.equal, "!=": np.not_equal,
        ">": np.greater, "<": np.less}


def parse_label_rule(rule: str) -> tuple[str, str, float]:
    """``"Rating >= 7"`` -> ``("Rating", ">=", 7.0)``; anything else is a ConfigError."""
    m = _RULE.match(rule or "")
    if not m:
        raise ConfigError(f"data.label_rule: cannot parse {rule!r} (expected e.g. 'Rating >= 7')")
    return m.group(1), m.group(2), float(m.group(3))


def _row_ref(frame: pd.DataFrame, pos: int) -> str:
    return f"row {pos + 1}"


def _index_ref(frame: pd.DataFrame, pos: int) -> str:
    """1-based data row of position ``pos`` (a chunk of a larger file keeps its index)."""
    label = frame.index[pos]
    return f"row {int(label) + 1}" if isinstance(label, (int, np.integer)) else f"row {label!r}"


def make_labels(frame: pd.DataFrame, cfg: Mapping, path: Path) -> np.ndarray:
    """Map the label column (or a rule over a numeric column) to 0/1."""
    rule = cfg["label_rule"]
    if rule:
        col, op, thr = parse_label_rule(rule)
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            raise DataError(f"{path}: column {col!r} {_row_ref(frame, bad[0])}: value "
                            f"{frame[col].iloc[bad[0]]!r} is not a number (needed by label_rule {rule!r})")
        return _OPS[op](values.to_numpy(dtype=float), thr).astype(np.int64)
    col = cfg["label_column"]
    pos, neg = _as_list(cfg["positive"]), _as_list(cfg["negative"])
    if not pos:
        raise ConfigError("data.positive: no positive label value given")
    raw = frame[col]
    is_pos = raw.isin(pos).to_numpy()
    is_neg = raw.isin(neg).to_numpy()
    bad = np.flatnonzero(~(is_pos | is_neg))
    if len(bad):
        allowed = pos + neg
        raise DataError(f"{path}: column {col!r} {_row_ref(frame, bad[0])}: value {raw.iloc[bad[0]]!r} "
                        f"is not one of {allowed} ({len(bad)} such rows)")
    return is_pos.astype(np.int64)


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


# --------------------------------------------------------------------------- cleaning
def _text_columns(cfg: Mapping) -> list[str]:
    cols = cfg["text_column"]
    return [cols] if isinstance(cols, str) else list(cols)


def _categorical_spec(cfg: Mapping) -> dict[str, dict]:
    spec = cfg.get("categorical") or {}
    if isinstance(spec, str):
        spec = [spec]
    if hasattr(spec, "items"):
        return {str(k): dict(v or {}) for k, v in spec.items()}
    return {str(c): {} for c in spec}


def repair_shifted_rows(frame: pd.DataFrame, text_col: str, cat_cols: list[str],
                        max_len: int) -> int:
    """Fix rows whose review text spilled into the categorical columns.

    A categorical value longer than ``max_len`` characters is review text: it is
    appended to ``text_col`` and the following categorical columns move one place
    left (the last becomes missing). Returns the number of repaired rows.
    """
    if not cat_cols or not max_len:
        return 0
    repaired = 0
    for i, col in enumerate(cat_cols):
        vals = frame[col]
        spilled = vals.notna() & (vals.astype(str).str.len() > max_len)
        for idx in frame.index[spilled.to_numpy()]:
            frame.at[idx, text_col] = f"{frame.at[idx, text_col]} {frame.at[idx, col]}".strip()
            rest = cat_cols[i:]
            for a, b in zip(rest, rest[1:]):
                frame.at[idx, a] = frame.at[idx, b]
            frame.at[idx, rest[-1]] = np.nan
            repaired += 1
    return repaired


def input_spec(cfg: Mapping) -> dict[str, Any]:
    """What a model trained on this dataset reads from a raw table: the text column(s) and
    the categorical columns with their spelling fixes. Saved in bundles so serving and batch
    prediction take the dataset's own column names."""
    cfg = section("data", cfg)
    return {"text_columns": _text_columns(cfg),
            "categorical": {c: dict(spec.get("normalize") or {}) for c, spec in _categorical_spec(cfg).items()},
            "max_category_len": cfg["max_category_len"]}


def model_frame(raw: pd.DataFrame, spec: Mapping[str, Any], source: str = "input",
                repair: bool = True) -> pd.DataFrame:
    """Raw table in a dataset's schema -> the model's columns (``text`` + categorical).

    Missing columns and non-text values raise DataError naming ``source``, the column
    and the row; missing text stays NaN (the pipeline's NullImputer fills it)."""
    text_cols = list(spec["text_columns"])
    cats = dict(spec.get("categorical") or {})
    missing = [c for c in [*text_cols, *cats] if c not in raw.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(map(repr, missing))} "
                        f"(has {', '.join(map(str, raw.columns)) or 'no columns'})")
    for c in text_cols:
        col = raw[c]
        if col.dtype != object:
            if col.isna().all():
                continue
            raise DataError(f"{source}: column {c!r} must hold text, got {col.dtype} values")
        bad = ~col.map(lambda v: isinstance(v, str) or v is None or (isinstance(v, float) and v != v))
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{source}: column {c!r} {_index_ref(raw, pos)}: expected text, got "
                            f"{type(col.iloc[pos]).__name__} {col.iloc[pos]!r:.40}")
    if len(text_cols) > 1:
        text = raw[text_cols].apply(lambda r: ". ".join(s for s in r if isinstance(s, str)) or np.nan, axis=1)
    else:
        text = raw[text_cols[0]]
    out = pd.DataFrame({"text": text.to_numpy(dtype=object)}, index=raw.index)
    for c in cats:
        out[c] = raw[c].to_numpy(dtype=object)
    n_fixed = repair_shifted_rows(out, "text", list(cats), int(spec.get("max_category_len") or 0)) if repair else 0
    out.attrs["n_repaired"] = n_fixed
    for c, mapping in cats.items():
        col = out[c].map(lambda v: mapping.get(v, v) if isinstance(v, str) else v)
        out[c] = col.fillna(MISSING_CATEGORY).astype(str)
    return out


#: (file, rows) whose repair this process has already reported
_REPAIRS_REPORTED: set[tuple[str, int]] = set()


def load_frame(path: str | Path, cfg: Mapping) -> pd.DataFrame:
    """Read one CSV and return the standard frame (id, text, label, categorical...)."""
    path, cfg = Path(path), section("data", {"name": Path(path).name, "files": {}, **cfg})  # the file is ``path``
    text_cols = _text_columns(cfg)
    cats = _categorical_spec(cfg)
    needed = list(text_cols) + list(cats)
    rule = cfg["label_rule"]
    needed.append(parse_label_rule(rule)[0] if rule else cfg["label_column"])
    id_cols = _as_list(cfg["id_column"])
    needed += id_cols
    frame = read_csv(path, list(dict.fromkeys(needed)))

    out = model_frame(frame, input_spec(cfg), str(path))
    n_fixed = out.attrs["n_repaired"]
    if n_fixed and (str(path), n_fixed) not in _REPAIRS_REPORTED:  # once per file, not once per split
        _REPAIRS_REPORTED.add((str(path), n_fixed))
        log.warning("%s: repaired %d row(s) whose text spilled into %s", path, n_fixed, list(cats))
    out.insert(1, "id", frame[id_cols].astype(str).agg("_".join, axis=1) if id_cols else
               [f"{path.name}:{i}" for i in range(len(frame))])

    missing = out["text"].isna().to_numpy()
    if missing.all():
        raise DataError(f"{path}: column {text_cols[0]!r} has no text in any row")
    if missing.any() and cfg["missing_text"] == "error":
        first = int(np.flatnonzero(missing)[0])
        raise DataError(f"{path}: column {text_cols[0]!r} {_row_ref(frame, first)}: text is missing "
                        f"({int(missing.sum())} such rows; set data.missing_text=impute to fill them)")
    out["label"] = make_labels(frame, cfg, path)
    out.attrs["n_missing_text"] = int(missing.sum())
    out.attrs["n_repaired"] = n_fixed
    return out[["id", "text", "label", *cats]].reset_index(drop=True)


# --------------------------------------------------------------------------- splitting
def _stratified_take(frame: pd.DataFrame, n: int | None, seed: int, field: str = "data.limit") -> pd.DataFrame:
    if n is None or n >= len(frame):
        return frame
    if n <= 0:
        raise ConfigError(f"{field}: {n} rows requested; it must be a positive number")
    counts = frame["label"].value_counts()
    strat = frame["label"] if counts.min() >= 2 and n >= len(counts) else None
    part, _ = train_test_split(frame, train_size=n, random_state=seed, stratify=strat)
    return part.sort_index()


def _split(frame: pd.DataFrame, frac: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not 0 < frac < 1:
        raise ConfigError(f"data.split fraction {frac} must be between 0 and 1")
    counts = frame["label"].value_counts()
    strat = frame["label"] if len(counts) > 1 and counts.min() >= 2 else None
    a, b = train_test_split(frame, test_size=frac, random_state=seed, stratify=strat)
    return a.sort_index(), b.sort_index()


def _checked_files(cfg: Mapping) -> dict[str, str]:
    cfg = section("data", cfg)
    files, policy = dict(cfg["files"]), cfg["split"]["policy"]
    keys = ("train", "test") if policy == "official" else ("all",)
    for k in keys:
        if k not in files:
            raise ConfigError(f"data.files.{k}: needed by split.policy={policy}")
    return {k: files[k] for k in keys}


def dataset_checksum(cfg: Mapping) -> str:
    """sha256 over the dataset's files (content, not paths)."""
    digest = hashlib.sha256()
    checks = _checked_files(cfg)
    for k in sorted(checks):
        if not Path(checks[k]).is_file():
            raise DataError(f"{checks[k]}: file not found (set XFER_DATA_DIR or the data.files.* config)")
        digest.update(f"{k}:{sha256_file(checks[k])}".encode())
    return digest.hexdigest()


def load_dataset(cfg: Mapping, seed: int = 0) -> Dataset:
    """Load and split a dataset described by a ``conf/data/*.yaml`` config."""
    cfg = section("data", cfg)
    split = cfg["split"]
    files = _checked_files(cfg)
    if split["policy"] == "official":
        train_full = load_frame(files["train"], cfg)
        test = load_frame(files["test"], cfg)
        train, val = _split(train_full, split["val_frac"], seed)
    else:
        full = load_frame(files["all"], cfg)
        rest, test = _split(full, split["test_frac"], seed)
        train, val = _split(rest, split["val_frac"] / (1 - split["test_frac"]), seed)

    for frame in (train, val, test):
        if frame["label"].nunique() < 2:
            raise DataError(f"{cfg['name']}: a split holds only one class; "
                            "the data needs both labels")
    if cfg["limit"] is not None:
        train, val, test = (_stratified_take(f, cfg["limit"], seed) for f in (train, val, test))
    pool_text, pool_label = train["text"].tolist(), train["label"].astype(int).tolist()
    n_train = cfg["n_train"]
    if n_train is not None:
        if n_train > len(train):
            raise ConfigError(f"data.n_train: {n_train} is not <= the {len(train)} reviews of the training split")
        train = _stratified_take(train, n_train, seed, "data.n_train")
    cats = list(_categorical_spec(cfg))
    info = {"n_train": len(train), "n_val": len(val), "n_test": len(test),
            "pos_rate_train": float(train["label"].mean()), "files": {k: str(v) for k, v in files.items()}}
    return Dataset(name=cfg["name"], train=train.reset_index(drop=True),
                   val=val.reset_index(drop=True), test=test.reset_index(drop=True),
                   categorical=cats, checksum=dataset_checksum(cfg), info=info, pool_text=pool_text,
                   pool_label=pool_label)


# --------------------------------------------------------------------------- download
def download_imdb(dest: str | Path, url: str = IMDB_URL, force: bool = False) -> dict[str, Path]:
    """Fetch the aclImdb tarball and write ``imdb/{train,test,unsup}.csv.gz`` under ``dest``.

    The layout matches the bundled data (columns id, rating, label, text; ids and
    ratings from the ``<id>_<rating>.txt`` file names). Existing files are reused
    unless ``force``; files appear atomically, so an interrupted download leaves
    nothing half-written (nor the directories it made).
    """
    out_dir = Path(dest) / "imdb"
    targets = {p: out_dir / f"{p}.csv.gz" for p in ("train", "test", "unsup")}
    if not force and all(t.is_file() for t in targets.values()):
        log.info("IMDB already present in %s", out_dir)
        return targets
    with made_dirs(out_dir), tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        archive = Path(tmp) / "aclImdb.tar.gz"
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise DataError(f"{url}: download failed: {e}") from None
        rows: dict[str, list[tuple[int, int, str, str]]] = {p: [] for p in targets}
        name_re = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    m = name_re.search(member.name)
                    if not m or not member.isfile():
                        continue
                    part, label, idx, rating = m.groups()
                    key = "unsup" if label == "unsup" else part
                    text = tar.extractfile(member).read().decode("utf-8")
                    rows[key].append((int(idx), int(rating), label, text))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{url}: not a readable aclImdb tarball: {e}") from None
        if not rows["train"] or not rows["test"]:
            raise DataError(f"{url}: archive holds no aclImdb/train or aclImdb/test reviews")
        order = {"pos": 0, "neg": 1, "unsup": 2}
        for part, target in targets.items():
            tmp_out = Path(tmp) / target.name
            data = sorted(rows[part], key=lambda r: (order[r[2]], r[0]))
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(["id", "rating", "label", "text"])
            writer.writerows(data)
            with gzip.open(tmp_out, "wt", encoding="utf-8", newline="") as f:
                f.write(buf.getvalue())
            os.replace(tmp_out, target)
    return targets


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xfer.data download-imdb [--dest DIR] [--url URL] [--force]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xfer.data")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download-imdb", help="download aclImdb and convert it to CSV")
    d.add_argument("--dest", default=str(data_dir()))
    d.add_argument("--url", default=IMDB_URL)
    d.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = download_imdb(args.dest, args.url, args.force)
    for p in paths.values():
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
