"""verify's comparison and the report built from step results (synthetic step files, no model)."""

import json

import numpy as np

from sam3spec import report
from sam3spec.runtime.verify import compare


def test_compare_applies_atol_plus_rtol_elementwise():
    expected = np.array([0.0, 10.0, -2.0], dtype=np.float32)
    ok = compare(expected + np.array([1e-4, 1e-3, -1e-4], dtype=np.float32), expected, atol=1e-4, rtol=1e-4)
    assert ok["ok"] and abs(ok["max_abs"] - 1e-3) < 1e-6 and abs(ok["max_rel"] - 1e-4) < 1e-6
    bad = compare(expected + np.array([0, 2e-3, 0], dtype=np.float32), expected, atol=1e-4, rtol=1e-4)
    assert not bad["ok"]


def test_compare_catches_nan_and_shape():
    expected = np.ones((2, 3), dtype=np.float32)
    assert not compare(np.full((2, 3), np.nan, dtype=np.float32), expected, 1.0, 1.0)["ok"]
    assert not compare(np.ones((3, 2), dtype=np.float32), expected, 1.0, 1.0)["ok"]
    both_nan = np.array([np.nan, 1.0], dtype=np.float32)
    assert compare(both_nan, both_nan, 1e-6, 1e-6)["ok"]


def _write(directory, name, **fields):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps({"step": name, "seconds": 1.5, **fields}))


def test_entry_reports_first_failure_and_skips(tmp_path):
    good, bad, skipped = tmp_path / "good", tmp_path / "bad", tmp_path / "skipped"
    out = {"name": "y", "max_abs": 1e-6, "max_rel": 1e-5, "atol": 1e-4, "rtol": 1e-4, "ok": True}
    for d in (good, bad, skipped):
        _write(d, "export", status="ok", exported_vs_original_max_abs=0.0)
    _write(good, "compile", status="ok")
    _write(good, "verify", status="ok", outputs=[out])
    _write(bad, "compile", status="failed", error="InternalError: boom")
    _write(skipped, "compile", status="ok")
    _write(skipped, "verify", status="skipped", reason="no metal device on this machine (Linux x86_64)",
           how="on a Mac run `nox -s port-metal`")
    entries = {d.name: report.entry(d.name, d) for d in (good, bad, skipped)}
    assert entries["good"]["status"] == "verified" and entries["good"]["outputs"] == [out]
    assert entries["good"]["seconds"] == {"export": 1.5, "compile": 1.5, "verify": 1.5}
    assert entries["bad"]["status"] == "compile failed: InternalError: boom"
    assert entries["skipped"]["status"] == "compiled"
    assert entries["skipped"]["not_verified"] == "no metal device on this machine (Linux x86_64)"
    assert [entries[n]["failed"] for n in ("good", "bad", "skipped")] == [False, True, False]
    md = report.markdown({"manifest": "m", "target": "cpu", "verified": 1, "components": list(entries.values())})
    assert "| good | verified | y | 1.00e-06 | 1.00e-05 | 0.0001 | 0.0001 |  | 1.5 | 1.5 | 1.5 |" in md
    assert "| bad | compile failed: InternalError: boom |" in md


def test_summary_says_what_was_not_verified_why_and_how(tmp_path):
    pipeline = {"name": "sam3spec.pipelines.gpu_dlight:pipeline", "options": {"metal_simdgroup_matmul": False}}
    for name in ("a", "b"):
        _write(tmp_path / name, "export", status="ok", exported_vs_original_max_abs=0.0)
        _write(tmp_path / name, "compile", status="ok", pipeline=pipeline, sources=["kernels.metal"],
               schedule={"rules": {"Matmul": 2, "Fallback": 3}, "passed_over": ["f: GEMV raised ValueError: x"]})
        _write(tmp_path / name, "verify", status="skipped", reason="no metal device on this machine (Linux x86_64)",
               how="on a Mac run `nox -s port-metal -- m.yaml`")
    entries = [report.entry(n, tmp_path / n) for n in ("a", "b")]
    md = report.markdown({"manifest": "m", "target": "metal", "verified": 0, "failed": 0, "components": entries})
    assert "0 of 2 components verified." in md
    assert ("**Not verified** (2 compiled only: a, b): no metal device on this machine (Linux x86_64). "
            "To verify, on a Mac run `nox -s port-metal -- m.yaml`.") in md
    assert "`<component>/kernels.metal`" in md
    assert 'Pipeline: `sam3spec.pipelines.gpu_dlight:pipeline` with {"metal_simdgroup_matmul": false}.' in md
    assert "Fallback 6, Matmul 4; 2 rule applications passed over" in md
    assert "| a | compiled |" in md and "verified |" not in md


def test_report_counts_matrix_kernels_shows_metal_check_and_autocast_errors(tmp_path):
    check = {"ok": False, "kernels": 3, "limits": {"buffers": 31, "threadgroup_bytes": 32768, "threads": 1024},
             "largest": {"buffers": 4, "threadgroup_bytes": 40000, "threads": 256},
             "problems": ["mm_kernel: threadgroup_bytes 40000 > 32768"]}
    rule = "max abs error <= 2 x PyTorch autocast float16's (CPU autocast, same inputs), or within the fp32 tolerance"
    for name, matrix in (("a", 2), ("b", 0)):
        _write(tmp_path / name, "export", status="ok")
        _write(tmp_path / name, "compile", status="ok", sources=["kernels.metal"],
               kernels={"kernels": 3, "matrix_unit": matrix, "instruction": "simdgroup_multiply_accumulate"},
               metal_check={**check, "ok": name == "b", "problems": [] if name == "b" else check["problems"]})
        _write(tmp_path / name, "verify", status="ok", rule=rule,
               outputs=[{"name": "y", "max_abs": 3e-3, "max_rel": 1e-2, "atol": 1e-3, "rtol": 1e-3,
                         "autocast_max_abs": 2e-3, "ok": True}])
    entries = [report.entry(n, tmp_path / n) for n in ("a", "b")]
    md = report.markdown({"manifest": "m", "target": "metal-fp16", "verified": 2, "failed": 0, "components": entries})
    assert "Kernels on the matrix units (`simdgroup_multiply_accumulate`): 2 of 6" in md
    assert "1 of 2 components pass" in md and "**a**: mm_kernel: threadgroup_bytes 40000 > 32768." in md
    assert f"Reduced precision: an output passes when its {rule}" in md
    assert "| max abs | max rel | autocast max abs | atol |" in md
    assert "| a | verified | y | 3.00e-03 | 1.00e-02 | 2.00e-03 | 0.001 | 0.001 | 3 (2 matrix) |" in md
