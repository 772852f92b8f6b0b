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


def test_memory_table_is_generated_from_its_json():
    record = json.loads((ROOT / "experiments" / "results" / "memory.json").read_text())
    assert _script("render_memory").table(record) in (ROOT / "experiments" / "README.md").read_text()


def test_hotel_sample_page_is_generated_from_its_json():
    record = json.loads((ROOT / "experiments" / "results" / "hotel_transfer_sample.json").read_text())
    assert _script("run_hotel_sample").render(record) == (ROOT / "experiments" / "hotel_transfer_sample.md").read_text()


def test_readme_results_section_is_generated_from_the_studies_json():
    for path, _, _, block in _script("render_results").blocks():
        assert block in path.read_text(), f"{path}: out of date (python experiments/render_results.py)"
