"""The benchmark's method (alternation, warm calls, medians) and its command; never its timings."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sam3spec.runtime import bench

ROOT = Path(__file__).resolve().parents[1]


def test_turns_alternate_with_an_untimed_call_first():
    order = []
    result = bench.measure(lambda: order.append("torch"), lambda: order.append("tvm"), repeats=3, min_repeats=3)
    assert order == ["torch", "tvm"] + ["torch", "torch", "tvm", "tvm"] * 3
    assert result["repeats"] == 3 and len(result["torch_s"]) == len(result["tvm_s"]) == 3
    assert result["ratio"] == pytest.approx(result["tvm_median_s"] / result["torch_median_s"])


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
