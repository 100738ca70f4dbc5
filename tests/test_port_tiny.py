"""The whole real pipeline on the reduced SAM3: validate → generate → export → compile → verify → report."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import port_command

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ["vit_trunk", "neck", "text_encoder", "geometry_encoder", "fusion_encoder", "decoder",
              "scoring_box_head", "segmentation_head", "sam_prompt_encoder", "sam_mask_decoder"]


@pytest.fixture(scope="module")
def tiny_report(tiny_port):
    return tiny_port


def test_every_component_verified(tiny_report):
    result, report = tiny_report
    statuses = {c["name"]: c["status"] for c in report["components"]}
    assert statuses == {name: "verified" for name in COMPONENTS}, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0
    assert (ROOT / "build" / "sam3-image-tiny" / "cpu" / "report.md").read_text().count("| verified |") == 10


def test_every_output_within_its_tolerance(tiny_report):
    _, report = tiny_report
    for component in report["components"]:
        assert component["outputs"], component["name"]
        for out in component["outputs"]:
            assert out["ok"] and out["max_abs"] <= out["atol"] + out["rtol"] * 1e6, (component["name"], out)
            assert out["max_abs"] == out["max_abs"]  # not NaN
        assert component["export"]["exported_vs_original_max_abs"] == 0.0, component["name"]
        assert set(component["seconds"]) == {"export", "compile", "verify"}


def test_dynamic_components_checked_at_two_sizes():
    from sam3spec.runtime import reference as reference_lib

    for name in ("geometry_encoder", "sam_prompt_encoder", "decoder"):
        reference = reference_lib.load(ROOT / "build" / "sam3-image-tiny" / "cpu" / name / reference_lib.FILE)
        shapes = [tuple(tuple(t.shape) for t in case["inputs"]) for case in reference["cases"]]
        assert len(shapes) == 2 and shapes[0] != shapes[1], name


def test_a_failing_component_does_not_stop_the_others(tmp_path):
    for name in ("manifests", "templates"):
        shutil.copytree(ROOT / name, tmp_path / name)
    (tmp_path / "manifests" / "broken.yaml").write_text(
        "manifest_version: 1\nextends: sam3-image-tiny.yaml\nname: broken\n"
        "components:\n"
        "  - name: no_such_module\n"
        "    adapter: sam3spec.runtime.resolve:resolve\n"   # called with the model: raises at export
        "    inputs: [{name: x, shape: [2], dtype: float32}]\n"
        "    outputs: [{name: y}]\n")
    result = port_command("manifests/broken.yaml", "-c", "no_such_module", "-c", "sam_prompt_encoder", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads((tmp_path / "build" / "broken" / "cpu" / "report.json").read_text())
    status = {c["name"]: c["status"] for c in report["components"]}
    assert status["no_such_module"].startswith("export failed: ")
    assert status["sam_prompt_encoder"] == "verified"


def test_bench_on_the_compiled_tiny_components(tiny_report):
    """`bench` runs the compiled modules against PyTorch and writes bench.json / bench.md (no timing asserts)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "sam3spec", "bench", "manifests/sam3-image-tiny.yaml",
                             "-c", "scoring_box_head", "-c", "sam_prompt_encoder", "--repeats", "2"],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads((ROOT / "build" / "sam3-image-tiny" / "cpu" / "bench.json").read_text())
    rows = {r["component"]: r for r in bench["components"]}
    assert set(rows) == {"scoring_box_head", "sam_prompt_encoder"}
    for row in rows.values():
        assert row["repeats"] == 2 and len(row["tvm_s"]) == 2 and row["tvm_median_s"] > 0
        assert row["tvm_threads"] == row["threads"] == bench["threads"]
    assert rows["scoring_box_head"]["flops"] > 0
    assert "| scoring_box_head |" in (ROOT / "build" / "sam3-image-tiny" / "cpu" / "bench.md").read_text()
