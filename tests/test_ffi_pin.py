"""The apache-tvm-ffi that TVM 0.27.0.post1 needs (noxfile.TVM_FFI) is the one installed, and the operations
that crash with another (Schedule.tensorize, save_json: tvm::ffi::ToJSONGraph) work."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pin(name: str) -> str:
    found = re.search(rf'^{name} = "(apache-tvm(?:-ffi)?)==([^"]+)"$', (ROOT / "noxfile.py").read_text(), re.M)
    assert found, f"noxfile.py has no {name} pin"
    return found.group(2)


def test_installed_ffi_is_the_pin():
    assert importlib.metadata.version("apache-tvm-ffi") == _pin("TVM_FFI")
    assert importlib.metadata.version("apache-tvm") == _pin("TVM")


def test_gpu_bundle_takes_the_pins_from_the_noxfile():
    script = (ROOT / "tools" / "gpu-runtime-bundle.sh").read_text()
    assert not re.search(r"^(TVM|FFI)_VERSION=[0-9]", script, re.M), "the bundle names versions of its own"
    lines = [line for line in script.splitlines() if line.startswith(("TVM_VERSION=", "FFI_VERSION="))]
    assert len(lines) == 2, lines
    out = subprocess.run(["bash", "-c", "\n".join(lines) + '\necho "$TVM_VERSION $FFI_VERSION"'], capture_output=True, text=True,
                         cwd=ROOT / "tools", env={"PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.split()[-2:] == [_pin("TVM"), _pin("TVM_FFI")]


def test_tensorize_and_save_json_run(tmp_path):
    """In a child process: with 0.1.15.post2 both end in a segfault, which must fail this test, not the run."""
    code = """
import tvm
from tvm import te
from tvm.s_tir import dlight as dl

from sam3spec.pipelines import intrinsics

intrinsics.quick_frames()  # as the GPU pipeline does: dlight registers TVM's intrinsics in seconds, not minutes
a = te.placeholder((256, 256), "float16", name="a")
b = te.placeholder((256, 256), "float16", name="b")
k = te.reduce_axis((0, 256), name="k")
c = te.compute((256, 256), lambda i, j: te.sum(a[i, k].astype("float32") * b[k, j].astype("float32"), axis=k))
target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
mod = tvm.IRModule({"main": te.create_prim_func([a, b, c])})
with target:
    mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul())(mod)
tvm.ir.load_json(tvm.ir.save_json(mod))
source = tvm.compile(mod, target=target).mod.imports[0].inspect_source()
print("mma_sync" in source)
"""
    (tmp_path / "mm.py").write_text(code)  # TVMScript reads its source
    out = subprocess.run([sys.executable, str(tmp_path / "mm.py")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "True", "dlight's Matmul did not use tensor cores (wmma mma_sync)"
