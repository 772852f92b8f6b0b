"""Side-by-side training speed: xfer (MXNet/Gluon) against the same model in PyTorch, on the
same CPU, in the same run.

    pip install torch==2.13.0        # the CPU build (not a project dependency)
    python experiments/bench_vs_pytorch.py [--models cnn,bilstm] [--rounds 3]

Both sides train on identical batches: the parent process preprocesses N IMDB training reviews
with xfer's pipeline (same vocabulary, max_len 400) and draws the length-bucketed batches with
xfer's own sampler (gluonnlp FixedBucketSampler, batch 64, the seed fit() uses); the PyTorch
child replays exactly those batches. The xfer child runs xfer.train.fit itself for one epoch
(hybridized with static_alloc, sparse embedding gradients with lazy Adam, global-norm clipping
at 5, dropout) and reports its own examples/s; the PyTorch child does the same steps (sparse
embedding + SparseAdam, Adam for the rest, the same clipping and dropout, packed sequences for
the BiLSTM, the same masking). Both use 2 threads. Children alternate, `--rounds` times; the
median counts. Writes experiments/results/speed_vs_pytorch.json with
speed_ratio_vs_pytorch = xfer examples/s / PyTorch examples/s per model.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MAX_LEN, BATCH, SEED = 400, 64, 0
SIZES = {"cnn": 4096, "bilstm": 2048}  # training reviews per measurement


def prepare(path: Path, n: int) -> None:
    """Sequences + the exact batches fit() will draw, pickled for both children."""
    import numpy as np
    import pandas as pd

    from xfer.config import compose_config
    from xfer.data import data_dir
    from xfer.encode import encode_frame, iter_batches
    from xfer.transforms import build_preprocessor, fit_preprocessor, token_vocab

    cfg = compose_config(["+experiment=imdb_base", "model=cnn"])  # token ids only (no n-gram bag)
    frame = pd.read_csv(data_dir() / "imdb" / "train.csv.gz")
    frame = frame.sample(n=n, random_state=0).reset_index(drop=True)
    pre = fit_preprocessor(build_preprocessor(cfg["transforms"]), frame)
    seqs = encode_frame(pre, frame, cfg["model"], MAX_LEN)
    y = frame["label"].eq("pos").astype(np.float32).to_numpy()
    batches = [(t.asnumpy().astype(np.int64), v.asnumpy().astype(np.int64), y[idx])
               for (t, v), _, idx in iter_batches(seqs, y, BATCH, 10, shuffle=True, seed=SEED * 1000)]
    with open(path, "wb") as f:
        pickle.dump({"seqs": seqs, "y": y, "vocab": token_vocab(pre).vocabulary_size, "batches": batches}, f)


def run_xfer(data: dict, model: str) -> dict:
    from xfer.config import compose_config
    from xfer.models import build_model, initialize
    from xfer.train import fit

    cfg = compose_config(["+experiment=imdb_base", f"model={model}"])
    opt = {**cfg["optimizer"], "lr_schedule": {"type": "constant"}}
    trainer = {**cfg["trainer"], "max_epochs": 1, "batch_size": BATCH, "progress": False, "checkpoint": False}
    net = initialize(build_model(cfg["model"], data["vocab"]), SEED)
    val = (data["seqs"][:64], data["y"][:64])
    res = fit(net, (data["seqs"], data["y"]), val, trainer, opt, seed=SEED)
    h = res.history[0]
    return {"examples_per_second": h["examples_per_second"], "seconds": h["epoch_seconds"],
            "examples": len(data["seqs"])}


def run_torch(data: dict, model: str) -> dict:
    import math

    import torch
    from torch import nn

    from xfer.config import compose_config

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    mcfg = compose_config(["+experiment=imdb_base", f"model={model}"])["model"]  # the sizes xfer builds
    V, E, H = data["vocab"], mcfg["embedding"]["size"], mcfg["hidden"]["size"]
    widths, filters = tuple(mcfg["encoder"].get("widths", ())), mcfg["encoder"].get("filters")
    units = mcfg["encoder"].get("hidden_size")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, E, sparse=True)
            nn.init.uniform_(self.emb.weight, -1 / E ** 0.5, 1 / E ** 0.5)
            self.edrop = nn.Dropout(mcfg["embedding"]["dropout"])
            if model == "cnn":
                self.convs = nn.ModuleList(nn.Conv1d(E, filters, w, padding=w - 1, bias=False) for w in widths)
                enc = filters * len(widths)
            else:
                self.rnn = nn.LSTM(E, units, batch_first=True, bidirectional=True)
                enc = 4 * units
            self.hidden = nn.Linear(enc, H)
            self.hdrop = nn.Dropout(mcfg["hidden"]["dropout"])
            self.out = nn.Linear(H, 1)

        def forward(self, tokens, valid):
            T = tokens.shape[1]
            mask = torch.arange(T)[None, :] < valid[:, None]
            e = self.edrop(self.emb(tokens)) * mask[..., None]
            if model == "cnn":
                # xfer's CNNEncoder: bias-free convolutions, max over time, ReLU; windows wholly in
                # padding are exactly 0 and cannot change relu(max), so no mask is needed
                x = e.transpose(1, 2)
                pooled = [torch.relu(conv(x).amax(dim=2)) for conv in self.convs]
                enc = torch.cat(pooled, dim=1)
            else:
                packed = nn.utils.rnn.pack_padded_sequence(e, valid, batch_first=True, enforce_sorted=False)
                h, _ = self.rnn(packed)
                h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=T)
                mean = h.sum(1) / valid[:, None]
                mx_ = h.masked_fill(~mask[..., None], -1e9).amax(1)
                enc = torch.cat([mean, mx_], dim=1)
            return self.out(self.hdrop(torch.relu(self.hidden(enc))))[:, 0]

    net = Net()
    sparse = [net.emb.weight]
    dense = [p for n, p in net.named_parameters() if not n.startswith("emb.")]
    opt_s, opt_d = torch.optim.SparseAdam(sparse, lr=0.002), torch.optim.Adam(dense, lr=0.002)
    loss_fn = nn.BCEWithLogitsLoss()
    net.train()
    seen, t0 = 0, time.perf_counter()
    for tokens, valid, y in data["batches"]:
        tokens, valid, y = torch.from_numpy(tokens), torch.from_numpy(valid), torch.from_numpy(y)
        opt_s.zero_grad()
        opt_d.zero_grad()
        loss = loss_fn(net(tokens, valid), y)
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        total = math.sqrt(sum(float((g.coalesce().values() if g.is_sparse else g).pow(2).sum()) for g in grads))
        if total > 5.0:
            for g in grads:
                g.mul_(5.0 / (total + 1e-8))
        opt_s.step()
        opt_d.step()
        float(loss)  # the same per-batch sync xfer's loop does
        seen += len(y)
    seconds = time.perf_counter() - t0
    return {"examples_per_second": seen / seconds, "seconds": seconds, "examples": seen,
            "torch": torch.__version__}


def child(kind: str, model: str, data_path: str) -> None:
    with open(data_path, "rb") as f:
        data = pickle.load(f)
    out = run_xfer(data, model) if kind == "xfer" else run_torch(data, model)
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="cnn,bilstm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--examples", type=int, default=None, help="training reviews per run (default per model)")
    ap.add_argument("--out", default="speed_vs_pytorch", help="experiments/results/<out>.json")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    from xfer.provenance import provenance

    prov = provenance()  # before this script writes into the tree
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MXNET_SUBGRAPH_VERBOSE": "0"}
    results = {}
    work = Path(tempfile.mkdtemp(prefix="bench_torch_"))
    for model in args.models.split(","):
        data = work / f"{model}.pkl"
        n = args.examples or SIZES[model]
        prepare(data, n)
        runs = {"xfer": [], "pytorch": []}
        for r in range(args.rounds):
            for kind in ("xfer", "pytorch") if r % 2 == 0 else ("pytorch", "xfer"):
                proc = subprocess.run([sys.executable, __file__, "--child", "xfer" if kind == "xfer" else "torch",
                                       model, str(data)], capture_output=True, text=True, env=env)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not line:
                    raise SystemExit(proc.stderr[-3000:])
                runs[kind].append(json.loads(line[0][7:]))
                print(model, kind, f"{runs[kind][-1]['examples_per_second']:.0f} ex/s", flush=True)
        med = {k: statistics.median(r["examples_per_second"] for r in v) for k, v in runs.items()}
        results[model] = {"xfer_examples_per_second": med["xfer"], "pytorch_examples_per_second": med["pytorch"],
                          "speed_ratio_vs_pytorch": med["xfer"] / med["pytorch"], "runs": runs,
                          "examples_per_run": n}
        print(model, f"ratio {results[model]['speed_ratio_vs_pytorch']:.2f}", flush=True)
    out = {**prov, "torch": runs["pytorch"][0].get("torch"),
           "setup": {"max_len": MAX_LEN, "batch_size": BATCH, "threads": 2, "optimizer": "Adam lr 0.002, sparse "
                     "embedding (lazy Adam / SparseAdam), global-norm clip 5", "rounds": args.rounds},
           "models": results}
    dest = ROOT / "experiments" / "results" / f"{args.out}.json"
    dest.write_text(json.dumps(out, indent=2))
    print(dest)


if __name__ == "__main__":
    main()
