"""Studies (xfer.study): the registry, diffs of two recorded versions, and a tiny study run end to
end into a temporary directory whose JSON carries its provenance."""
import json
import subprocess
from pathlib import Path

import pytest

from helpers import PY, TRANSFER_QUICK, cli_env
from xfer.study import diff_table, load_studies, main

ROOT = Path(__file__).resolve().parent.parent
PROVENANCE = ("commit", "dirty", "date", "machine", "python", "packages", "command")


def test_every_registered_study_names_an_existing_script_and_a_results_path():
    studies = load_studies(ROOT)
    assert {"hotel_sample", "imdb_base", "memory", "serving", "preprocess"} <= set(studies)
    for name, s in studies.items():
        script = s["command"].split()[1]
        assert (ROOT / script).is_file(), f"{name}: {script} missing"
        assert s["results"].startswith("experiments/results/") and s["results"].endswith(".json")
        assert "/tmp" not in s["command"] and "--bundle" not in s["command"], name  # runs from nothing


def test_diff_shows_each_figure_of_two_versions_and_the_change():
    spec = {"rows": "summary", "key": "method", "columns": ["test_roc_auc", "train_seconds"]}
    a = {"commit": "a" * 40, "date": "d1", "summary": [{"method": "transfer", "test_roc_auc": 0.9, "train_seconds": 4.0},
                                                       {"method": "scratch", "test_roc_auc": 0.8, "train_seconds": 5.0}]}
    b = {"commit": "b" * 40, "date": "d2", "summary": [{"method": "transfer", "test_roc_auc": 0.92, "train_seconds": 4.0},
                                                       {"method": "tfidf_lr", "test_roc_auc": 0.85, "train_seconds": 0.2}]}
    text = diff_table(a, b, spec, ("old", "new"))
    assert "| transfer | 0.9 -> 0.92 (+0.02) | 4 |" in text
    assert "| scratch | 0.8 -> - | 5 -> - |" in text and "| tfidf_lr | - -> 0.85 | - -> 0.2 |" in text
    assert text.startswith("old (aaaaaaaaaaaa, d1) -> new (bbbbbbbbbbbb, d2)")


def test_diff_of_committed_versions_and_bad_names(tmp_path, capsys):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"summary": [{"method": "transfer_gradual", "test_roc_auc": 0.5}]}))
    assert main(["--root", str(ROOT), "diff", "hotel_sample", str(a)]) == 0
    out = capsys.readouterr().out
    assert "| transfer_gradual | 0.5 -> " in out and "working tree" in out
    assert main(["--root", str(ROOT), "diff", "nope", str(a)]) == 2
    assert "study 'nope': unknown" in capsys.readouterr().err
    assert main(["--root", str(ROOT), "diff", "hotel_sample", "not-a-commit"]) == 2
    assert "neither a JSON file nor a commit" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "list"]) == 2
    assert "no study registry here" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_tiny_study_runs_from_nothing_and_records_its_provenance(tmp_path):
    from conftest import need_data

    need_data("hotel/hotel_reviews_sample.csv.gz", "imdb/train.csv.gz")
    out = tmp_path / "study"
    tiny = [*TRANSFER_QUICK[1:], "base.data.limit=200", "transfer.repeats=1", "transfer.tsne.enabled=false",
            "heads.catboost.iterations=10", "trainer.max_epochs=1"]
    proc = subprocess.run([PY, "-m", "xfer.study", "--root", str(ROOT), "run", "hotel_sample", "--out-dir", str(out),
                           "--", *tiny], capture_output=True, text=True, env=cli_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results" / "hotel_transfer_sample.json").read_text())
    for key in (*PROVENANCE, "config", "wall_seconds"):
        assert record.get(key) not in (None, ""), key
    assert {"cpu", "cores", "memory_mb", "speed"} <= set(record["machine"]) and record["packages"]["mxnet"] == "1.9.1"
    assert record["command"].startswith("python experiments/run_hotel_sample.py")
    assert record["config"]["transfer"]["repeats"] == 1 and record["artifact_mb_per_transfer_run"] > 0
    assert {r["method"] for r in record["summary"]} == {"transfer_gradual", "scratch", "catboost_embeddings", "tfidf_lr"}
    page = (out / "hotel_transfer_sample.md").read_text()
    (out / "hotel_transfer_sample.md").unlink()
    again = subprocess.run([PY, "-m", "xfer.study", "--root", str(ROOT), "report", "hotel_sample", "--out-dir",
                            str(out)], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "hotel_transfer_sample.md").read_text() == page  # the page is the JSON's, regenerated


def test_the_machine_entry_records_the_speed_of_this_machine():
    import math

    from xfer.provenance import machine

    measured = machine()["speed"]
    assert set(measured) == {"python_mloops_per_second", "matmul_gflops"}
    assert all(math.isfinite(v) and v > 0 for v in measured.values()), measured


def test_only_code_and_config_changes_make_a_record_dirty():
    from xfer.provenance import is_result

    assert is_result("experiments/results/imdb_base.json") and is_result("experiments/learning_curve.png")
    assert is_result("experiments/README.md") and is_result("README.md")  # their tables come from the JSON
    for code in ("experiments/run_learning_curve.py", "experiments/studies.yaml", "xfer/conf/config.yaml",
                 "pyproject.toml", "experiments/results_x.py"):
        assert not is_result(code), code
