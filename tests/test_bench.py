"""The benchmark's method (alternation, warm calls, medians) and its command; never its timings."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sam3spec.runtime import bench

ROOT = Path(__file__).resolve().parents[1]


def test_turns_alternate_with_a_wait_and_an_untimed_call_first(monkeypatch):
    order = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: order.append(f"wait {s}"))
    result = bench.measure(lambda: order.append("torch"), lambda: order.append("tvm"), repeats=3, min_repeats=3)
    wait = f"wait {bench.SETTLE_S}"
    assert bench.SETTLE_S > 0
    assert order == ["torch", "tvm"] + [wait, "torch", "torch", wait, "tvm", "tvm"] * 3
    assert result["settle_s"] == bench.SETTLE_S
    assert result["repeats"] == 3 and len(result["torch_s"]) == len(result["tvm_s"]) == 3
    assert result["ratio"] == pytest.approx(result["tvm_median_s"] / result["torch_median_s"])


def test_onnx_runtime_takes_its_turn_after_tvm(monkeypatch):
    order = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    result = bench.measure(lambda: order.append("torch"), lambda: order.append("tvm"), repeats=2, min_repeats=2,
                           peers={"ort": lambda: order.append("ort")})
    assert order == ["torch", "tvm", "ort"] + ["torch", "torch", "tvm", "tvm", "ort", "ort"] * 2
    assert len(result["ort_s"]) == 2
    assert result["ratio_ort"] == pytest.approx(result["tvm_median_s"] / result["ort_median_s"])


def test_a_failed_export_names_the_error_it_was_raised_from():
    """torch.onnx's ConversionError points at a stack trace that bench.md does not show: the cause is named."""
    try:
        try:
            raise ValueError("Cannot view a tensor with shape [201, 1, 8, 32] as (201, 256)!\nUse tlparse")
        except ValueError as inner:
            raise RuntimeError("Failed to export.\n(Refer to the full stack trace above for more information.)") \
                from inner
    except RuntimeError as exc:
        reason = bench.failure_reason(exc)
    assert reason == ("RuntimeError: (Refer to the full stack trace above for more information.) <- "
                      "ValueError: Cannot view a tensor with shape [201, 1, 8, 32] as (201, 256)!")
    assert bench.failure_reason(ValueError("one\ntwo")) == "ValueError: two"


def test_bench_table_has_the_onnx_runtime_column_and_says_why_it_did_not_run():
    from sam3spec.report import bench_markdown

    row = {"flops": 2e9, "tvm_gflops": 20.0, "torch_gflops": 10.0, "repeats": 3, "settle_s": 0.2}
    bench_md = bench_markdown({"manifest": "m", "target": "cpu", "cpu": "x", "threads": 2, "components": [
        {**row, "component": "a", "tvm_median_s": 0.1, "torch_median_s": 0.2, "ratio": 0.5, "ort_median_s": 0.4,
         "ratio_ort": 0.25, "onnxruntime": {"status": "ok", "max_abs_vs_pytorch": 3e-6}},
        {**row, "component": "b", "tvm_median_s": 0.3, "torch_median_s": 0.3, "ratio": 1.0,
         "onnxruntime": {"status": "failed", "reason": "UnsupportedOperatorError: aten::foo"}}]})
    assert "| ONNX Runtime ms | TVM / ONNX Runtime |" in bench_md
    assert "(in each turn a 0.2 s wait, an untimed call, then the timed one)" in bench_md
    assert "| a | 100.0 | 200.0 | 0.50 |" in bench_md and "| 400.0 | 0.25 |" in bench_md
    assert "| b | 300.0 | 300.0 | 1.00 |" in bench_md and "| failed | |" in bench_md
    assert "| all | 400.0 | 500.0 | 0.80 | | | | | 400.0 | 0.25 |" in bench_md  # ORT's sum: what it ran
    assert "- a: max abs difference to PyTorch 3.00e-06" in bench_md
    assert "- b: failed: UnsupportedOperatorError: aten::foo" in bench_md


def test_repeats_scale_with_call_time():
    assert bench.repeats_for(10.0, 3) == 3
    assert bench.repeats_for(0.1, 3) == 20
    assert bench.repeats_for(1e-5, 3) == 50


def test_flops_of_a_linear_layer():
    layer = torch.nn.Linear(64, 32)
    assert bench.flops(layer, (torch.randn(10, 64),)) == 2 * 10 * 64 * 32


def test_bench_refuses_components_that_are_not_compiled(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "sam3spec", "bench", "manifests/sam3-image-tiny.yaml", "--target",
                             "metal"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "bench runs on cpu (llvm) and cuda targets; 'metal' is metal" in result.stderr
    fresh = tmp_path / "repo"  # a checkout with nothing built
    for name in ("manifests", "templates"):
        shutil.copytree(ROOT / name, fresh / name)
    result = subprocess.run([sys.executable, "-m", "sam3spec", "bench", "manifests/sam3-image-tiny.yaml", "-c",
                             "neck"], cwd=fresh, capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert "not compiled for cpu: neck" in result.stderr and "port" in result.stderr
    assert not (fresh / "build" / "sam3-image-tiny" / "cpu" / "bench.json").exists()


def test_bench_build_ports_what_is_missing_first(tmp_path):
    """`bench --build` runs `port` for the components not compiled yet (port's own options left at their
    defaults), then times them."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TVM_NUM_THREADS": "2"}
    for name in ("manifests", "templates"):
        shutil.copytree(ROOT / name, tmp_path / name)
    result = subprocess.run([sys.executable, "-m", "sam3spec", "bench", "manifests/sam3-image-tiny.yaml", "-c",
                             "scoring_box_head", "--build", "--repeats", "3"], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bench: porting scoring_box_head first" in result.stdout
    assert (tmp_path / "build" / "sam3-image-tiny" / "cpu" / "scoring_box_head" / "verify.json").is_file()
    assert "| scoring_box_head |" in (tmp_path / "build" / "sam3-image-tiny" / "cpu" / "bench.md").read_text()
