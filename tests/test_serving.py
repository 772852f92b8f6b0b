"""Serving: the pyfunc model, the registry, `mlflow models serve` and batch prediction,
used as a user would (subprocesses, a fresh tracking store)."""
import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xfer.data import data_dir
from xfer.errors import ConfigError, DataError

from helpers import free_port

pytestmark = pytest.mark.e2e

QUICK = ["+experiment=imdb_base", "model=pool", "data.limit=400", "trainer.max_epochs=2", "tracking.keep_outputs=true",
         "model.encoder.bigram_buckets=2000", "trainer.progress=false"]
NAME = "imdb-test"
BIN = str(Path(sys.executable).parent)


def _env(uri: str) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tiny IMDB model, trained through the CLI and registered by config (register.name)."""
    tmp = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-m", "xfer.run", f"tracking.uri={uri}", *QUICK, f"register.name={NAME}"],
                          cwd=tmp, capture_output=True, text=True, timeout=300, env=_env(uri))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"registered {NAME} version 1" in proc.stdout + proc.stderr
    [bundle] = list(tmp.glob("outputs/*/*/bundle"))
    return {"dir": tmp, "uri": uri, "bundle": bundle}


@pytest.fixture(scope="module")
def reviews():
    frame = pd.read_csv(data_dir() / "imdb" / "test.csv.gz", nrows=13000)
    return pd.concat([frame.head(300), frame.tail(300)]).reset_index(drop=True)  # both classes


def _client(store):
    import mlflow

    mlflow.set_tracking_uri(store["uri"])  # for the fluent calls (models:/ URIs) too
    return mlflow.MlflowClient(store["uri"])


def test_run_logs_a_pyfunc_model_and_registers_it(store):
    client = _client(store)
    mv = client.get_model_version_by_alias(NAME, "champion")
    assert str(mv.version) == "1"
    run = client.get_run(mv.run_id)
    assert run.data.tags["xfer.model_uri"].startswith("models:/")
    assert f"test_roc_auc {run.data.metrics['test_roc_auc']:.4f}" in mv.description
    assert float(mv.tags["metric.test_roc_auc"]) == pytest.approx(run.data.metrics["test_roc_auc"])
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["text"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["probability", "label"]
    reqs = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1/requirements.txt",
                                                    tracking_uri=store["uri"])).read_text()
    assert "mxnet==1.9.1" in reqs and "gluonnlp==0.10.0" in reqs and "scikit-learn==" in reqs


def test_pyfunc_loads_in_a_fresh_process_and_matches_the_bundle(store, reviews, tmp_path):
    from xfer.bundle import load_bundle

    texts = reviews["text"].iloc[::60].tolist()
    (tmp_path / "in.json").write_text(json.dumps(texts))
    code = ("import json, sys, mlflow, pandas as pd\n"
            f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
            f"out = m.predict(pd.DataFrame({{'text': json.load(open({str(tmp_path / 'in.json')!r}))}}))\n"
            "print(json.dumps({'p': out['probability'].tolist(), 'l': out['label'].tolist(),"
            " 'xfer': 'xfer' in sys.modules}))\n")
    # a directory without xfer on its path: the model brings its own code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          env={**_env(store["uri"]), "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = load_bundle(store["bundle"]).predict_frame(pd.DataFrame({"text": texts}))
    np.testing.assert_allclose(got["p"], want["probability"], rtol=1e-5, atol=1e-6)
    assert got["l"] == want["label"].tolist() and set(got["l"]) <= {"pos", "neg"}


def test_alias_stays_on_a_better_version(store):
    from xfer.registry import register_best

    client = _client(store)
    champ = client.get_model_version_by_alias(NAME, "champion")
    client.set_model_version_tag(NAME, champ.version, "metric.test_roc_auc", "2.0")  # pretend it is unbeatable
    try:
        res = register_best(NAME, store["uri"], run_id=champ.run_id)
        assert res.version != str(champ.version) and not res.alias_moved
        assert client.get_model_version_by_alias(NAME, "champion").version == champ.version  # unchanged
        forced = register_best(NAME, store["uri"], run_id=champ.run_id, force_alias=True)
        assert forced.alias_moved
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == forced.version
    finally:
        client.set_model_version_tag(NAME, champ.version, "metric.test_roc_auc",
                                     str(client.get_run(champ.run_id).data.metrics["test_roc_auc"]))


def test_registry_cli_errors(store):
    proc = subprocess.run([sys.executable, "-m", "xfer.registry", "--name", NAME, "--tracking-uri", store["uri"],
                           "--parent", "0" * 32], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: no finished run with a model and metric 'test_roc_auc' "
                                                "to register"]



def _post(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_mlflow_models_serve_answers_and_rejects_bad_payloads(store, reviews, tmp_path):
    from xfer.bundle import load_bundle

    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=_env(store["uri"]),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "server did not come up"
            time.sleep(1)
        texts = reviews["text"].iloc[::100].tolist()
        status, body = _post(base + "/invocations", {"dataframe_split": {"columns": ["text"],
                                                                          "data": [[t] for t in texts]}})
        assert status == 200, body
        want = load_bundle(store["bundle"]).predict_frame(pd.DataFrame({"text": texts}))
        got = pd.DataFrame(body["predictions"])
        np.testing.assert_allclose(got["probability"], want["probability"], rtol=1e-5, atol=1e-6)
        assert got["label"].tolist() == want["label"].tolist()

        bad = {
            "missing column": ({"dataframe_split": {"columns": ["review"], "data": [["fine"]]}}, "missing inputs"),
            "wrong type": ({"dataframe_split": {"columns": ["text"], "data": [[5]]}}, "expected text, got int"),
            "empty batch": ({"dataframe_split": {"columns": ["text"], "data": []}}, "no rows to predict"),
            "oversized text": ({"dataframe_split": {"columns": ["text"], "data": [["good " * 30000]]}},
                               "text has 150000 characters (limit 100000)"),
            "not json": (b"{not json", "valid JSON"),
        }
        for case, (payload, message) in bad.items():
            status, body = _post(base + "/invocations", payload)
            assert status == 400, (case, status, body)
            assert message in body.get("message", ""), (case, body)
        status, body = _post(base + "/invocations", {"dataframe_records": [{"text": texts[0]}]})
        assert status == 200 and len(body["predictions"]) == 1  # still serving
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def _predict(store, cwd, *args):
    return subprocess.run([sys.executable, "-m", "xfer.predict", f"tracking_uri={store['uri']}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=_env(store["uri"]))


def test_batch_predict_cli(store, reviews, tmp_path):
    from xfer.bundle import load_bundle

    src = tmp_path / "reviews.csv"
    reviews.to_csv(src, index=False)
    dst = tmp_path / "out" / "scored.csv"
    proc = _predict(store, tmp_path, f"model=models:/{NAME}@champion", f"input={src}", f"output={dst}",
                    "chunk_size=250", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "600 reviews scored" in proc.stdout
    out = pd.read_csv(dst)
    # input columns kept in order; the input has a `label` column, so the outputs are prefixed
    assert list(out.columns) == [*reviews.columns, "predicted_probability", "predicted_label"]
    pd.testing.assert_frame_equal(out[list(reviews.columns)], reviews, check_dtype=False)
    want = load_bundle(store["bundle"]).predict_frame(reviews[["text"]])
    np.testing.assert_allclose(out["predicted_probability"], want["probability"], rtol=1e-5, atol=1e-6)
    # a run id works as the model reference too
    dst2 = tmp_path / "scored2.csv"
    run_id = _client(store).get_model_version_by_alias(NAME, "champion").run_id
    assert _predict(store, tmp_path, f"model={run_id}", f"input={src}", f"output={dst2}").returncode == 0
    np.testing.assert_allclose(pd.read_csv(dst2)["predicted_probability"], out["predicted_probability"], atol=1e-6)

    before = src.read_bytes()
    proc = _predict(store, tmp_path, f"model={store['bundle']}", f"input={src}", f"output={tmp_path}/./reviews.csv")
    assert proc.returncode == 2 and "refusing to overwrite it" in proc.stderr
    assert src.read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["input=reviews.csv", "output=o.csv"], "error: model: required"),
    (["model=x", "input=reviews.csv", "output=o.csv", "chunk=5"], "error: chunk: unknown option"),
    (["model=x", "input=reviews.csv", "output=o.csv", "chunk_size=0"], "error: chunk_size: must be >= 1"),
    (["model=/no/such/bundle", "input=reviews.csv", "output=o.csv"], "error: /no/such/bundle: no such bundle directory"),
])
def test_batch_predict_cli_bad_arguments(store, tmp_path, args, message):
    proc = _predict(store, tmp_path, *args)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert not (tmp_path / "o.csv").exists()


class _Recorder:
    """Wraps a bundle and records the size of every chunk it is asked to score."""

    def __init__(self, bundle):
        self.bundle, self.sizes = bundle, []

    def predict_frame(self, frame, *args, **kwargs):
        self.sizes.append(len(frame))
        return self.bundle.predict_frame(frame, *args, **kwargs)


def test_predict_csv_streams_in_chunks_and_writes_atomically(store, reviews, tmp_path):
    from xfer.bundle import load_bundle
    from xfer.predict import predict_csv

    bundle = _Recorder(load_bundle(store["bundle"]))
    src = tmp_path / "in.csv.gz"
    frame = reviews[["id", "text"]].head(450)
    frame.to_csv(src, index=False, compression="gzip")
    res = predict_csv(bundle, src, tmp_path / "out.csv", chunk_size=100)
    assert bundle.sizes == [100, 100, 100, 100, 50] and res.rows == 450
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["id", "text", "probability", "label"] and len(out) == 450
    predict_csv(bundle, src, tmp_path / "out.csv.gz", chunk_size=100)  # a .gz output is gzipped
    with gzip.open(tmp_path / "out.csv.gz", "rt", encoding="utf-8") as f:
        pd.testing.assert_frame_equal(pd.read_csv(f), out)
    (tmp_path / "out.csv.gz").unlink()

    # a bad row late in the file: one-line error naming the row; no output, no temp file
    bad = frame.copy()
    bad.loc[333, "text"] = "x" * 200_001
    bad.to_csv(src, index=False, compression="gzip")
    (tmp_path / "out.csv").unlink()
    for dst in (tmp_path / "out.csv", tmp_path / "new" / "dir" / "out.csv"):  # directories made for it go too
        with pytest.raises(DataError, match=r"in\.csv\.gz: row 334: text has 200001 characters \(limit 100000\)"):
            predict_csv(bundle, src, dst, chunk_size=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv.gz"]
    with pytest.raises(ConfigError, match="is the input file"):
        predict_csv(bundle, src, src)


def test_predict_csv_input_errors(store, tmp_path):
    from xfer.bundle import load_bundle
    from xfer.predict import predict_csv

    bundle = load_bundle(store["bundle"])
    cases = {
        "header.csv": (b"id,text\n", "file has a header but no rows"),
        "latin1.csv": (b"id,text\n1,ok\n2,caf\xe9\n", "undecodable bytes"),
        "cols.csv": (b"id,review\n1,fine\n", "missing column(s) 'text'"),
        "empty.csv": (b"", "file is empty"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            predict_csv(bundle, tmp_path / name, tmp_path / "out.csv")
        assert not (tmp_path / "out.csv").exists()
    assert not list(tmp_path.glob(".*tmp"))
