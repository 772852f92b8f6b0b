"""Fault and bad-input suite: every case ends with one `error:` line naming the file/field and
the problem, exit code 2 (or HTTP 400, see test_serving.py), and leaves no half-written run,
bundle or output file. Cases covered elsewhere: missing/empty/undecodable/malformed CSV, missing
column, unknown label, all-NaN text, bad label rule (test_data.py, test_cli.py); shifted hotel row
(test_data.py); config typo (test_cli.py); a crashing sweep job (test_sweep.py); malformed
serving payloads (test_serving.py); a corrupt or foreign checkpoint (test_resume.py);
property-based transformer tests (test_transforms.py)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from xfer.data import data_dir


pytestmark = pytest.mark.e2e

QUICK = ["+experiment=imdb_base", "model=pool", "trainer.max_epochs=1", "model.encoder.bigram_buckets=1000",
         "trainer.progress=false", "tracking.log_model=false"]


def _cli(cwd: Path, *overrides, module="xfer.run", prefix=()):
    cmd = [sys.executable, *prefix, "-m", module, *overrides] if not prefix else [sys.executable, *prefix, *overrides]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _runs(db: Path):
    import mlflow

    if not db.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _leftovers(root: Path) -> list[str]:
    """Bundles, checkpoints and temporary files (".name.XXXX") under the job output dirs."""
    return sorted(str(p.relative_to(root)) for p in root.glob("outputs/*/*/**/*")
                  if (p.name.startswith(".") and p.name != ".hydra") or p.name in ("bundle", "checkpoint"))


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    frame = pd.read_csv(data_dir() / "imdb" / "test.csv.gz", nrows=13000)
    frame = pd.concat([frame.head(150), frame.tail(150)])
    path = tmp_path_factory.mktemp("data") / "small.csv"
    frame.to_csv(path, index=False)
    return path


def _data(csv: Path) -> list[str]:
    return [f"data.files.train={csv}", f"data.files.test={csv}"]


def test_read_only_tracking_store(tmp_path, small_csv):
    import mlflow

    db = tmp_path / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").create_experiment("xfer")
    before = db.read_bytes()
    proc = _cli(tmp_path, f"tracking.uri='sqlite:///file:{db}?mode=ro&uri=true'", *QUICK, *_data(small_csv))
    line = _one_error_line(proc)
    assert "cannot use the MLflow store (attempt to write a readonly database)" in line
    assert db.read_bytes() == before and _runs(db) == []
    assert _leftovers(tmp_path) == []


# a job whose disk fills up while it writes the bundle: joblib.dump fails with ENOSPC
DISK_FULL = (
    "import errno, sys\n"
    "import xfer.bundle\n"
    "def full(obj, path, *a, **k):\n"
    "    open(path, 'wb').write(b'partial')\n"
    "    raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
    "xfer.bundle.joblib.dump = full\n"
    "from xfer.run import main\n"
    "sys.argv = ['xfer.run', *sys.argv[1:]]\n"
    "main()\n")


def test_disk_full_while_saving_the_bundle(tmp_path, small_csv):
    db = tmp_path / "mlflow.db"
    proc = _cli(tmp_path, f"tracking.uri=sqlite:///{db}", *QUICK, *_data(small_csv), prefix=["-c", DISK_FULL])
    line = _one_error_line(proc)
    assert line.endswith("preprocessor.joblib: No space left on device"), line
    [run] = _runs(db)
    assert run.info.status == "FAILED"  # recorded as failed, not left RUNNING or marked FINISHED
    assert "bundle" not in {a.path for a in __import__("mlflow").MlflowClient(f"sqlite:///{db}")
                            .list_artifacts(run.info.run_id)}
    assert [p for p in _leftovers(tmp_path) if "bundle" in p] == []  # no bundle, no temporary bundle dir


def test_a_one_megabyte_review_trains(tmp_path, small_csv):
    frame = pd.read_csv(small_csv)
    frame.loc[3, "text"] = ("a surprisingly long review " * 40000)[:1_000_000]
    csv = tmp_path / "long.csv"
    frame.to_csv(csv, index=False)
    proc = _cli(tmp_path, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *QUICK, *_data(csv))
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = _runs(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test_roc_auc"] <= 1


def test_a_vocabulary_of_one_token_trains_and_an_empty_one_is_an_error(tmp_path):
    csv = tmp_path / "one.csv"
    pd.DataFrame({"id": range(60), "text": ["good"] * 60, "label": ["pos", "neg"] * 30}).to_csv(csv, index=False)
    proc = _cli(tmp_path, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *QUICK, *_data(csv),
                "data.id_column=id", "data.split.val_frac=0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = _runs(tmp_path / "mlflow.db")
    assert run.data.params["vocab_size"] == "3"  # <pad>, <unk>, good
    assert run.data.metrics["test_roc_auc"] == pytest.approx(0.5)  # one token: nothing to learn

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli(empty, f"tracking.uri=sqlite:///{empty / 'mlflow.db'}", *QUICK, *_data(csv), "data.id_column=id",
                "data.split.val_frac=0.3", "transforms.min_freq=1000")
    assert "transforms: the vocabulary is empty (no token occurs min_freq=1000 times" in _one_error_line(proc)
    assert _runs(empty / "mlflow.db") == [] and _leftovers(empty) == []


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, small_csv):
    """Two tiny bundles of different architectures (pool, cnn)."""
    from xfer.config import compose_config
    from xfer.jobs.train import train_task

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for model in ("pool", "cnn"):
        base = [o for o in QUICK if model == "pool" or "bigram" not in o]
        cfg = compose_config([*base, f"model={model}", *_data(small_csv), "tracking.enabled=false",
                              "model.embedding.size=8", "trainer.max_len=100"])
        out[model] = Path(train_task(cfg, root / model)["bundle"])
    return out


def _predict(cwd, bundle, csv):
    return _cli(cwd, f"model={bundle}", f"input={csv}", f"output={cwd / 'out.csv'}", module="xfer.predict")


def test_a_corrupted_bundle_file(tmp_path, bundles, small_csv):
    bad = tmp_path / "bundle"
    shutil.copytree(bundles["pool"], bad)
    with open(bad / "net.params", "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xff\xff\xff")
    line = _one_error_line(_predict(tmp_path, bad, small_csv))
    assert line == f"error: {bad / 'net.params'}: checksum mismatch (file changed or corrupt)"
    assert not (tmp_path / "out.csv").exists()


def test_a_bundle_whose_weights_come_from_another_architecture(tmp_path, bundles, small_csv):
    from xfer.data import sha256_file

    bad = tmp_path / "bundle"
    shutil.copytree(bundles["pool"], bad)
    shutil.copy(bundles["cnn"] / "net.params", bad / "net.params")  # someone "fixed" the checksum too
    meta = json.loads((bad / "meta.json").read_text())
    meta["files"]["net.params"] = sha256_file(bad / "net.params")
    (bad / "meta.json").write_text(json.dumps(meta))
    line = _one_error_line(_predict(tmp_path, bad, small_csv))
    assert line.startswith(f"error: {bad / 'net.params'}: does not match the architecture in model.json")
    assert not (tmp_path / "out.csv").exists()


def test_a_missing_bundle_file(tmp_path, bundles, small_csv):
    bad = tmp_path / "bundle"
    shutil.copytree(bundles["pool"], bad)
    (bad / "preprocessor.joblib").unlink()
    assert _one_error_line(_predict(tmp_path, bad, small_csv)) == \
        f"error: {bad / 'preprocessor.joblib'}: missing file"
