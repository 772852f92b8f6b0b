"""Figures in the docs come from the results JSON by a script, never by hand: the generated parts
must equal what the script makes of the committed JSON."""
import importlib.util
import json
import sys

from conftest import ROOT


def _script(name: str):
    """A script of experiments/ as a module (its directory on the path, as when it runs)."""
    if str(ROOT / "experiments") not in sys.path:
        sys.path.append(str(ROOT / "experiments"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hotel_sample_page_is_generated_from_its_json():
    record = json.loads((ROOT / "experiments" / "results" / "hotel_transfer_sample.json").read_text())
    assert _script("run_hotel_sample").render(record) == (ROOT / "experiments" / "hotel_transfer_sample.md").read_text()


def test_readme_results_section_is_generated_from_the_studies_json():
    for path, _, _, block in _script("render_results").blocks():
        assert block in path.read_text(), f"{path}: out of date (python experiments/render_results.py)"


def test_no_committed_result_names_a_temporary_path_or_a_run_id():
    """Results are re-created by their command on any machine: no path of a temporary directory
    and no MLflow run id (32 hex digits) in anything under experiments/ or in the README."""
    import re

    temp = re.compile(r"/tmp/|/var/folders/|/private/var/|\\Temp\\|xfer-(?:curve|hotel|ui|tune)-\w{8}")
    run_id = re.compile(r"(?<![0-9a-fA-F])[0-9a-f]{32}(?![0-9a-fA-F])")
    files = [ROOT / "README.md", *(p for p in (ROOT / "experiments").rglob("*")
                                   if p.suffix in (".md", ".json", ".yaml", ".py", ".txt", ".csv"))]
    assert len(files) > 10
    for path in files:
        text = path.read_text()
        for pattern in (temp, run_id):
            found = pattern.search(text)
            assert found is None, f"{path.relative_to(ROOT)}: {found.group(0)!r} at {found.start()}"


def test_tune_transfer_reads_the_searched_values_from_a_trials_overrides_and_picks_by_validation():
    tune = _script("tune_transfer")
    params = tune.trial_params("optimizer.lr=0.003 schedule=full seed=0 data.n_train=500 'transfer.vocab=extend' "
                               "tracking.uri=sqlite:///a=b.db")
    assert params == {"optimizer.lr": "0.003", "schedule": "full", "transfer.vocab": "extend"}
    trials = [{"job": 0, "val_roc_auc": 0.81, "test_roc_auc": 0.90}, {"job": 1, "val_roc_auc": 0.84, "test_roc_auc": 0.80},
              {"job": 2, "val_roc_auc": 0.84, "test_roc_auc": 0.95}]
    assert tune.best_trial(trials)["job"] == 1  # the test figure plays no part; the first of a tie
    assert tune.shown("0.0018455281167495396") == "0.001846" and tune.shown("gradual") == "gradual"
