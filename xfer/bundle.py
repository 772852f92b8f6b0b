"""A trained model as one directory: network, architecture, preprocessing, labels, metadata.

Layout::

    net.params          Gluon parameters (save_parameters), or, for a network trained
                        from a base that MLflow keeps (a transfer child), both of:
    net.delta.npz       the parameters as a difference to the base's: per parameter the
                        rows that changed (row index + values) or the whole array
    base.json           where the base is (an MLflow run id) and the checksums of its files
    model.json          architecture config + vocabulary size + sequence settings
    preprocessor.joblib fitted sklearn Pipeline / ColumnTransformer
    labels.json         label mapping, e.g. {"0": "neg", "1": "pos"}
    meta.json           xfer version, config fingerprint, data checksum, metrics,
                        and the sha256 of every other file

``preprocessor.joblib`` is a pickle: load bundles only from sources you trust.
Saving writes into a temporary sibling directory and renames it, so a bundle is
either complete or absent.

A transfer relearns a few thousand of the base's embedding rows and n-gram buckets
(sparse gradients with lazy updates leave the others bit-identical), so its delta is a
few MB where the whole network is 56 MB. Loading a delta bundle fetches its base with
the ``fetch`` callable given to :func:`load_bundle` (``xfer.tracking.resolve_bundle``
on the tracking side), checks the base's file checksums and adds the delta.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import joblib
import numpy as np
import pandas as pd

from . import __version__
from .errors import BundleError, XferError
from .data import atomic_dir, sha256_file

FILES = ("net.params", "model.json", "preprocessor.joblib", "labels.json")
DELTA, BASE_REF = "net.delta.npz", "base.json"


def fingerprint(obj: Any) -> str:
    """A stable sha256 of a JSON-able config (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Bundle:
    net: Any
    preprocessor: Any
    model_cfg: dict
    labels: dict = field(default_factory=lambda: {"0": "negative", "1": "positive"})
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    #: where this bundle can be fetched again (an MLflow run id); a network trained from it
    #: is then saved as a delta against it
    ref: str | None = None

    @classmethod
    def in_hand(cls, path: str | Path, net, preprocessor) -> "Bundle":
        """The bundle just saved at ``path`` from ``net`` and ``preprocessor``, without reloading
        them (only its small JSON files are read)."""
        path = Path(path)
        read = lambda name: json.loads((path / name).read_text())  # noqa: E731
        return cls(net=net, preprocessor=preprocessor, model_cfg=read("model.json"), labels=read("labels.json"),
                   meta=read("meta.json"), path=path)

    @property
    def vocab_size(self) -> int:
        return int(self.model_cfg["vocab_size"])

    def sequences(self, frame: pd.DataFrame) -> list[np.ndarray]:
        """Raw frame (``text`` + categorical columns) -> model-ready id arrays."""
        from .encode import encode_frame

        return encode_frame(self.preprocessor, frame, self.model_cfg["architecture"], self.model_cfg.get("max_len"),
                            self.model_cfg.get("truncate", "head"))

    def predict_proba(self, frame: pd.DataFrame | Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Positive-class probabilities for a model frame (``text`` + categorical columns)."""
        from .encode import predict_proba

        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame({"text": list(frame)})
        return predict_proba(self.net, self.sequences(frame), batch_size=batch_size)

    def warm_up(self) -> None:
        """Score one review of every padded request length up to ``max_len``, longest first, then
        one raw row, so that a server's first request of each length does not pay oneDNN's kernel
        compilation (tens of ms). Longest first: after the largest shape, MXNet's statically
        allocated memory fits every smaller one (shortest first left single-review requests
        slower, experiments/README.md)."""
        from .encode import REQUEST_ROUND_TO, predict_logits
        from .models import bag_spec

        longest = int(self.model_cfg.get("max_len") or 1024)
        bag = bag_spec(self.model_cfg["architecture"]) is not None
        for t in range(-(-longest // REQUEST_ROUND_TO) * REQUEST_ROUND_TO, 0, -REQUEST_ROUND_TO):
            ids = np.ones(t, dtype=np.int32)
            predict_logits(self.net, [(ids, np.arange(1, 2 * t + 1, dtype=np.int32)) if bag else ids])
        self.predict_frame(pd.DataFrame({c: ["a warm-up review"] for c in self.input_columns}))

    @property
    def inputs(self) -> dict:
        """The raw columns this model reads (saved at training time; older bundles read ``text``)."""
        spec = self.meta.get("inputs")
        if spec:
            return spec
        from .transforms import categorical_columns

        return {"text_columns": ["text"], "categorical": {c: {} for c in categorical_columns(self.preprocessor)},
                "max_category_len": 0}

    @property
    def input_columns(self) -> list[str]:
        return [*self.inputs["text_columns"], *self.inputs.get("categorical", {})]

    def predict_frame(self, raw: pd.DataFrame, source: str = "input", batch_size: int | None = None,
                      max_text_chars: int | None = None) -> pd.DataFrame:
        """A raw table in the training data's schema -> ``probability`` and ``label`` columns
        (same index). Raises DataError for a missing column, a non-text value, an empty
        table or a text longer than ``max_text_chars``."""
        from .data import _index_ref, model_frame
        from .errors import DataError

        if len(raw) == 0:
            raise DataError(f"{source}: no rows to predict")
        frame = model_frame(raw, self.inputs, source)
        if max_text_chars:
            lengths = frame["text"].map(lambda t: len(t) if isinstance(t, str) else 0).to_numpy()
            if lengths.max() > max_text_chars:
                pos = int(np.argmax(lengths > max_text_chars))
                raise DataError(f"{source}: {_index_ref(raw, pos)}: text has {lengths[pos]} characters "
                                f"(limit {max_text_chars})")
        p = self.predict_proba(frame, batch_size=batch_size)
        names = np.array([self.labels.get("0", "0"), self.labels.get("1", "1")], dtype=object)
        return pd.DataFrame({"probability": p, "label": names[(p >= 0.5).astype(int)]}, index=raw.index)


def save_bundle(path: str | Path, net, preprocessor, architecture: Mapping, vocab_size: int,
                labels: Mapping[str, str], max_len: int | None = None, truncate: str = "head",
                meta: Mapping[str, Any] | None = None, base: Bundle | None = None) -> Path:
    """Write a bundle directory atomically and return its path. With a ``base`` that has a
    ``ref``, the network is stored as its difference to the base's (``net.delta.npz``)."""
    with atomic_dir(path) as tmp:
        if base is not None and base.ref:
            np.savez_compressed(tmp / DELTA, **param_delta(param_arrays(net), param_arrays(base.net)))
            (tmp / BASE_REF).write_text(json.dumps({"ref": base.ref, "files": base.meta.get("files", {})},
                                                   indent=2, sort_keys=True))
        else:
            net.save_parameters(str(tmp / "net.params"))
        model = {"architecture": dict(architecture), "vocab_size": int(vocab_size), "max_len": max_len,
                 "truncate": truncate}
        (tmp / "model.json").write_text(json.dumps(model, indent=2, sort_keys=True))
        joblib.dump(preprocessor, tmp / "preprocessor.joblib")
        (tmp / "labels.json").write_text(json.dumps(dict(labels), indent=2))
        full_meta = {"xfer_version": __version__, **dict(meta or {}),
                     "files": {f: sha256_file(tmp / f) for f in bundle_files(tmp)}}
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, sort_keys=True, default=str))
    return Path(path)


def bundle_files(path: Path) -> tuple[str, ...]:
    """The files a bundle directory must hold besides ``meta.json``."""
    net = (DELTA, BASE_REF) if (path / DELTA).is_file() or (path / BASE_REF).is_file() else ("net.params",)
    return (*net, *FILES[1:])


def param_arrays(net) -> dict[str, np.ndarray]:
    """A network's parameters by their structural names (the keys of ``save_parameters``)."""
    return {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}


def param_delta(params: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``params`` as a difference to ``base``: for a parameter whose rows are mostly the base's
    (the base's shape, or more rows: an extended vocabulary), ``rows/<name>`` (indices of rows
    that differ, bit for bit, plus every added row) and ``vals/<name>``; otherwise ``full/<name>``."""
    out = {}
    for name, a in params.items():
        b = base.get(name)
        if b is not None and a.ndim >= 1 and a.shape[1:] == b.shape[1:] and a.shape[0] >= b.shape[0]:
            n = b.shape[0]
            same = (a[:n] == b).reshape(n, -1).all(axis=1)
            rows = np.concatenate([np.flatnonzero(~same), np.arange(n, a.shape[0])])
            if 2 * len(rows) < a.shape[0]:
                out[f"rows/{name}"], out[f"vals/{name}"] = rows.astype(np.int64), a[rows]
                continue
        out[f"full/{name}"] = a
    return out


def apply_delta(delta: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray],
                shapes: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """The parameters that ``param_delta`` described, given the base's and the target shapes."""
    out = {}
    for name, shape in shapes.items():
        if f"full/{name}" in delta:
            out[name] = delta[f"full/{name}"]
            if out[name].shape != tuple(shape):
                raise ValueError(f"{name}: shape {out[name].shape}, network {tuple(shape)}")
            continue
        if f"rows/{name}" not in delta or name not in base:
            raise KeyError(name)
        a = np.empty(shape, dtype=base[name].dtype)
        a[: base[name].shape[0]] = base[name]
        a[delta[f"rows/{name}"]] = delta[f"vals/{name}"]
        out[name] = a
    return out


def load_bundle(path: str | Path, ctx=None, fetch: Callable[[str], Bundle] | None = None) -> Bundle:
    """Rebuild the network and preprocessing from a bundle directory, checking every file.
    A delta bundle's base is loaded with ``fetch(ref)`` (e.g. ``xfer.tracking.resolve_bundle``);
    without ``fetch`` its ``ref`` must be a local bundle directory."""
    from .models import build_model
    from .transforms import token_vocab

    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle directory not found")
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise BundleError(f"{meta_file}: missing file (not an xfer bundle?)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{meta_file}: not valid JSON ({e.msg})") from None
    for name in bundle_files(path):
        f = path / name
        if not f.is_file():
            raise BundleError(f"{f}: missing file")
        want = meta.get("files", {}).get(name)
        if want and sha256_file(f) != want:
            raise BundleError(f"{f}: checksum mismatch (file changed or corrupt)")
    model_cfg = json.loads((path / "model.json").read_text())
    labels = json.loads((path / "labels.json").read_text())
    try:
        pre = joblib.load(path / "preprocessor.joblib")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad bundle
        raise BundleError(f"{path / 'preprocessor.joblib'}: cannot load ({type(e).__name__}: {e})") from None
    vocab = token_vocab(pre).vocabulary_size
    if vocab != int(model_cfg["vocab_size"]):
        raise BundleError(f"{path}: vocabulary mismatch: preprocessor has {vocab} tokens, "
                          f"model.json says {model_cfg['vocab_size']}")
    net = build_model(model_cfg["architecture"], int(model_cfg["vocab_size"]))
    import mxnet as mx

    if (path / DELTA).is_file():
        _load_delta(net, path, fetch, ctx or mx.cpu())
    else:
        try:
            net.load_parameters(str(path / "net.params"), ctx=ctx or mx.cpu())
        except Exception as e:  # noqa: BLE001 - MXNet raises bare MXNetError/AssertionError
            msg = " ".join(str(e).split())[:300]
            raise BundleError(f"{path / 'net.params'}: does not match the architecture in model.json ({msg})") from None
    net.hybridize(static_alloc=True)
    return Bundle(net=net, preprocessor=pre, model_cfg=model_cfg, labels=labels, meta=meta, path=path)


def _load_delta(net, path: Path, fetch: Callable[[str], Bundle] | None, ctx) -> None:
    """Set ``net``'s parameters from the base named in ``base.json`` plus ``net.delta.npz``."""
    import mxnet as mx

    ref = json.loads((path / BASE_REF).read_text())
    if fetch is None:
        if not Path(ref["ref"]).is_dir():
            raise BundleError(f"{path / BASE_REF}: its base {ref['ref']} is an MLflow run: load this bundle "
                              "through MLflow (xfer.tracking.resolve_bundle, `xfer.predict --model`)")
        fetch = load_bundle
    try:
        base = fetch(ref["ref"])
    except XferError as e:
        raise BundleError(f"{path / BASE_REF}: cannot load its base network ({e})") from None
    if base.meta.get("files") != ref["files"]:
        raise BundleError(f"{path / BASE_REF}: the base {ref['ref']} is not the network this bundle was "
                          "trained from (its files' checksums differ)")
    params = net._collect_params_with_prefix()
    with np.load(path / DELTA) as delta:
        try:
            values = apply_delta(delta, param_arrays(base.net), {k: p.shape for k, p in params.items()})
        except (KeyError, ValueError, IndexError) as e:
            raise BundleError(f"{path / DELTA}: does not match the architecture in model.json ({e})") from None
    del base
    for name, p in params.items():
        p._load_init(mx.nd.array(values.pop(name), dtype=p.dtype), ctx)


def bundle_dir_of(path: str | Path) -> Path:
    """A bundle directory, or the bundle inside a pyfunc model directory (``artifacts/bundle``)."""
    path = Path(path)
    if (path / "meta.json").is_file() or not (path / "MLmodel").is_file():
        return path
    return path / "artifacts" / "bundle"
