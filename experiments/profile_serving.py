"""Where batch prediction spends its time, stage by stage, for one bundle on this machine.

    python experiments/profile_serving.py [--bundle <bundle dir | run id>] [--rows 5000] [--name NAME]

Times, on the first ``--rows`` IMDB test reviews (a fresh read of the CSV each round, median
of ``--rounds``): the fitted sklearn preprocessing (``preprocess_seconds``: tokenizing and
id lookup), the network's inputs (``prepare_seconds``: truncation and the n-gram bags),
batching plus the forward pass (``forward_seconds``) and all of ``Bundle.predict_frame``
(``predict_seconds``, ``reviews_per_second``) as the pyfunc model and ``xfer.predict`` call it.
``conv_gflops_per_second`` is the CNN's convolution arithmetic over the reviews' own tokens per
second of the forward pass: how close the forward pass is to the CPU's peak. ``operators_ms``:
MXNet's profiler over one more forward pass of the same reviews, milliseconds per operator
(aggregate, the largest first; ``operator_share`` of their sum). Writes
``experiments/results/serving_profile[_NAME].json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfer.data import data_dir  # noqa: E402
from xfer.encode import predict_logits, prepare_sequences  # noqa: E402
from xfer.models import bag_spec, ngram_spec  # noqa: E402
from xfer.provenance import provenance  # noqa: E402
from xfer.tracking import resolve_bundle  # noqa: E402
from xfer.transforms import apply_preprocessor, token_vocab  # noqa: E402


def prepared(bundle, frame: pd.DataFrame, ids=None) -> list:
    """The network's inputs for ``frame``'s reviews (token ids and n-gram bags)."""
    arch, cfg = bundle.model_cfg["architecture"], bundle.model_cfg
    spec = ngram_spec(arch)
    if ids is None:
        ids, _ = apply_preprocessor(bundle.preprocessor, frame)
    return prepare_sequences(ids, cfg.get("max_len"), token_vocab(bundle.preprocessor).vocabulary_size,
                             spec["buckets"], cfg.get("truncate", "head"), spec["ngrams"], spec["unique"],
                             bag=bag_spec(arch))


def stages(bundle, frame: pd.DataFrame, batch_size: int) -> dict[str, float]:
    t0 = time.perf_counter()
    ids, _ = apply_preprocessor(bundle.preprocessor, frame)
    t1 = time.perf_counter()
    seqs = prepared(bundle, frame, ids)
    t2 = time.perf_counter()
    predict_logits(bundle.net, seqs, batch_size=batch_size or None)
    t3 = time.perf_counter()
    bundle.predict_frame(frame, batch_size=batch_size or None)
    t4 = time.perf_counter()
    return {"preprocess_seconds": t1 - t0, "prepare_seconds": t2 - t1, "forward_seconds": t3 - t2,
            "predict_seconds": t4 - t3, "tokens": sum(len(s[0]) if isinstance(s, tuple) else len(s) for s in seqs)}


def operator_times(net, seqs) -> dict[str, float]:
    """Milliseconds per MXNet operator over one forward pass of ``seqs`` (profiler aggregate)."""
    import mxnet as mx

    with tempfile.TemporaryDirectory(prefix="profile_serving_ops_") as tmp:
        mx.profiler.set_config(profile_imperative=True, profile_symbolic=True, aggregate_stats=True,
                               filename=str(Path(tmp) / "profile.json"))
        mx.profiler.set_state("run")
        predict_logits(net, seqs)
        mx.nd.waitall()
        mx.profiler.set_state("stop")
        table = json.loads(mx.profiler.dumps(format="json", reset=True))["Time"].get("operator", {})
    ops = {name: row["Total"] for name, row in table.items() if name not in ("DeleteVariable", "WaitForVar")}
    return dict(sorted(ops.items(), key=lambda kv: -kv[1]))


def conv_flops_per_token(arch: dict) -> float:
    """Multiply-adds x 2 of the CNN's convolutions per input token (0 for other encoders)."""
    enc = arch["encoder"]
    if enc["type"] != "cnn":
        return 0.0
    return 2.0 * arch["embedding"]["size"] * enc["filters"] * sum(enc["widths"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help="default: train `+experiment=imdb_base` into a scratch store")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=0, help="0: batches of about 32,768 tokens (the default)")
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    prov = provenance()
    with tempfile.TemporaryDirectory(prefix="profile_serving_") as tmp:
        if args.bundle is None:
            from bench_serving import default_base

            args.bundle, args.tracking_uri = default_base(Path(tmp))
        bundle = resolve_bundle(args.bundle, args.tracking_uri)
    frame = pd.read_csv(data_dir() / "imdb" / "test.csv.gz", nrows=args.rows)[["text"]]
    stages(bundle, frame.head(500), args.batch_size)  # warm-up: oneDNN kernels per shape
    rounds = [stages(bundle, frame, args.batch_size) for _ in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ops = operator_times(bundle.net, prepared(bundle, frame))
    total = med["preprocess_seconds"] + med["prepare_seconds"] + med["forward_seconds"]
    out = {**prov, "rows": len(frame), "rounds": args.rounds, "batch_size": args.batch_size,
           "architecture": bundle.model_cfg["architecture"], "max_len": bundle.model_cfg.get("max_len"),
           **med, "reviews_per_second": len(frame) / med["predict_seconds"],
           # the convolutions' arithmetic rate over the reviews' own tokens (padding not counted)
           "conv_gflops_per_second": med["tokens"] * conv_flops_per_token(bundle.model_cfg["architecture"])
           / med["forward_seconds"] / 1e9,
           "share": {k.removesuffix("_seconds"): med[k] / total for k in
                     ("preprocess_seconds", "prepare_seconds", "forward_seconds")},
           "operators_ms": {k: round(v, 1) for k, v in ops.items()},
           "operator_share": {k: round(v / sum(ops.values()), 4) for k, v in list(ops.items())[:8]}}
    name = f"serving_profile_{args.name}" if args.name else "serving_profile"
    path = ROOT / "experiments" / "results" / f"{name}.json"
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps({k: out[k] for k in (*med, "reviews_per_second", "conv_gflops_per_second", "share",
                                          "operator_share")}, indent=2))


if __name__ == "__main__":
    main()
