"""The pretrain stage of a network: its word vectors, trained once per fingerprint as their own
MLflow run (tag ``xfer.task=pretrain``, artifact ``vectors.npz``) and reused by every stage
with the same settings, or read from ``pretrain.vectors``."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ..bundle import fingerprint
from ..data import Dataset, sha256_file
from ..pretrain import WordVectors, check, read_vectors, train_vectors, unlabelled_texts
from ..tracking import NullTracker, flatten, tracked_run
from .stages import reuse_or_run

log = logging.getLogger(__name__)

#: pretrain keys that do not change the vectors
RUNTIME_KEYS = ("oov", "rescale")


def pretrain_fingerprint(cfg: Mapping, data_checksum: str) -> str:
    """Identity of trained vectors: the settings, the unlabelled files (by content), the stage's
    training texts (its data by content, its split settings and seed) and its tokenizer."""
    pcfg = cfg["pretrain"]
    data = {k: v for k, v in cfg["data"].items() if k != "files"}
    return fingerprint({"pretrain": {k: v for k, v in pcfg.items() if k not in RUNTIME_KEYS and k != "files"},
                        "files": [sha256_file(f) for f in pcfg["files"]], "data": data,
                        "data_checksum": data_checksum, "transforms": cfg["transforms"], "seed": cfg["seed"],
                        "dim": cfg["model"]["embedding"]["size"]})


def stage_fingerprint_part(cfg: Mapping, data_checksum: str) -> dict:
    """What the pretrain stage adds to the fingerprint of the network it initialises (nothing
    without pretraining, so such networks keep their fingerprints)."""
    pcfg = cfg["pretrain"]
    if pcfg["method"] == "none":
        return {}
    check(pcfg, cfg["model"]["embedding"]["size"])
    if pcfg["method"] == "file":
        return {"pretrain": {"vectors": sha256_file(pcfg["vectors"]), "oov": pcfg["oov"], "rescale": pcfg["rescale"]}}
    return {"pretrain": {"fingerprint": pretrain_fingerprint(cfg, data_checksum), "oov": pcfg["oov"],
                         "rescale": pcfg["rescale"]}}


def obtain_vectors(cfg: Mapping[str, Any], pre, ds: Dataset, tracker: NullTracker) -> tuple[WordVectors | None, dict]:
    """The stage's word vectors (None without pretraining) and where they came from."""
    pcfg, dim = cfg["pretrain"], cfg["model"]["embedding"]["size"]
    if pcfg["method"] == "none":
        return None, {}
    check(pcfg, dim)
    if pcfg["method"] == "file":
        return read_vectors(pcfg["vectors"], dim), {"source": "file", "path": str(pcfg["vectors"])}
    fp = pretrain_fingerprint(cfg, ds.checksum)

    def run():
        texts = unlabelled_texts(pcfg, ds.train["text"])
        with tracked_run(tracker.child(), f"{ds.name}-pretrain-{pcfg['method']}",
                         {"xfer.task": "pretrain", "xfer.fingerprint": fp, "xfer.data": ds.name}) as run:
            run.log_params(flatten({"pretrain": pcfg, "transforms": cfg["transforms"], "seed": cfg["seed"],
                                    "dim": dim}))
            wv, metrics = train_vectors(pcfg, pre, texts, dim, cfg["seed"], progress=cfg["trainer"]["progress"])
            run.log_metrics(metrics)
            with tempfile.TemporaryDirectory(prefix="xfer-vectors-") as tmp:
                run.log_artifact(wv.save(Path(tmp) / "vectors.npz"))
        return wv, {"source": "trained", "run_id": run.run_id, "fingerprint": fp, "metrics": metrics}

    def reuse(found):
        with tempfile.TemporaryDirectory(prefix="xfer-vectors-") as tmp:
            wv = WordVectors.load(tracker.download_artifacts(found["run_id"], "vectors.npz", dst=tmp))
        return wv, {"source": "reused", "run_id": found["run_id"], "fingerprint": fp}

    return reuse_or_run(tracker, cfg["tracking"], fp, {"xfer.task": "pretrain"}, "pretrain", run, reuse)
