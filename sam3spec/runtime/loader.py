"""Load a compiled component: its library into a Relax VM on the target's device, and its weights, laid
out once by the library's ``main_transform_params`` when the pipeline made one (pipelines/prepack.py)."""

from __future__ import annotations

import os
from pathlib import Path

from sam3spec.runtime import threads
from sam3spec.runtime.artifacts import checked, read_result

DEVICES = {"llvm": "cpu", "cuda": "cuda", "metal": "metal"}
LIBRARY_FILE = {"llvm": "lib.so", "cuda": "lib.so", "metal": "lib.tar"}
PARAMS_FILE = "params.json"  # the library's weights by state-dict name, shape, dtype and sha256


def device_for(target: dict, remote=None):
    """The TVM device of a manifest target (``tvm.cpu()``, ``tvm.cuda()``, ...), on this machine or on an RPC
    session's (``tvm.rpc.connect``); check ``.exist``."""
    import tvm

    if remote is None:
        runtime_libraries(target["kind"])
    return getattr(remote or tvm, DEVICES[target["kind"]])()


def runtime_libraries(kind: str) -> None:
    """With the TVM runtime alone (``TVM_USE_RUNTIME_LIB=1``, as on a GPU machine with no compiler) tvm loads
    libtvm_runtime.so only: load the extra and device runtimes it ships beside it, once."""
    if kind == "llvm" or not os.environ.get("TVM_USE_RUNTIME_LIB") or kind in _LOADED:
        return
    import ctypes

    import tvm

    for name in ("libtvm_runtime_extra.so", f"libtvm_runtime_{kind}.so"):
        path = Path(tvm.__file__).parent / "lib" / name
        if path.is_file():
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    _LOADED.add(kind)


_LOADED: set = set()


def cuda_jit(arch: str, cache: Path | None = None) -> None:
    """A CUDA library from apache-tvm 0.27 holds CUDA C, compiled when loaded through the global function
    ``tvm_callback_cuda_compile``. tvm's own (tvm.support.nvcc, NVRTC by default) needs the TVM compiler
    library, absent with the runtime alone: where nvcc is on PATH, compile with it to a fatbin for `arch` (kept in
    `cache` by the source's hash where given: the staged tuning compiles its candidates in parallel first)."""
    import shutil

    import tvm_ffi

    nvcc = shutil.which("nvcc")
    if not nvcc:
        return

    def compile_cuda(code, *_target):
        import hashlib
        import subprocess
        import tempfile

        key = hashlib.sha256((arch + "\n" + code).encode()).hexdigest()
        cached = cache / f"{key}.fatbin" if cache else None
        if cached is not None and cached.is_file():
            return bytearray(cached.read_bytes())
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "kernels.cu").write_text(code)
            subprocess.run([nvcc, "--fatbin", "-O3", f"-arch={arch}", "-o", "kernels.fatbin", "kernels.cu"],
                           cwd=tmp, check=True, capture_output=True, text=True)
            fatbin = (Path(tmp) / "kernels.fatbin").read_bytes()
        if cached is not None:  # written whole, then renamed: a parallel reader sees all of it or nothing
            cache.mkdir(parents=True, exist_ok=True)
            part = cached.with_suffix(f".{os.getpid()}.part")
            part.write_bytes(fatbin)
            part.replace(cached)
        return bytearray(fatbin)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_cuda, override=True)


def describe_weight(name: str, array) -> dict:
    """A weight as params.json records it: state-dict name, shape, dtype, sha256 of its bytes, and its sum and
    absolute sum in float64 (to recognise the same weights regenerated on another machine, where a seeded
    init such as trunc_normal_ may differ in the last bit)."""
    import hashlib

    import numpy as np

    array = np.ascontiguousarray(array)
    return {"name": name, "shape": list(array.shape), "dtype": str(array.dtype),
            "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "sum": float(array.astype(np.float64).sum()), "abs_sum": float(np.abs(array.astype(np.float64)).sum())}


def weight_match(recorded: dict, array) -> str | None:
    """"identical" (same bytes), "close" (same shape and dtype, sums within 1e-5 of the absolute sum: the same
    seeded weights, regenerated with last-bit differences), or None (other weights)."""
    now = describe_weight(recorded["name"], array)
    if now["shape"] != recorded["shape"] or now["dtype"] != recorded["dtype"]:
        return None
    if now["sha256"] == recorded["sha256"]:
        return "identical"
    scale = 1e-5 * (recorded.get("abs_sum", float("nan")) + 1e-12)
    close = all(abs(now[k] - recorded.get(k, float("nan"))) <= scale for k in ("sum", "abs_sum"))
    return "close" if close else None


def compiled(out_dir: str | Path) -> bool:
    """Whether out_dir holds a compiled component: its compile.json says ok and its library is there."""
    result = read_result(Path(out_dir), "compile") or {}
    return result.get("status") == "ok" and (Path(out_dir) / result.get("library", "")).is_file()


def transform_params(vm, weights: list, remote: bool = False) -> list | None:
    """The weights laid out as ``main`` takes them by ``main_transform_params``; None if there is none.
    remote: over TVM's RPC, which cannot carry the tuple argument: the ``_flat`` twin, called statefully."""
    try:
        transform = vm["main_transform_params"]
    except AttributeError:  # the pipeline packed no weights
        return None
    if not remote:
        return list(transform(weights))
    return _stateful(vm, "main_transform_params_flat", weights)


def _stateful(vm, name: str, args: list) -> list:
    """Call a VM function through set_input / invoke_stateful / get_outputs: the calls TVM's RPC carries
    (tuples in and out are not)."""
    vm.set_input(name, *args)
    vm.invoke_stateful(name)
    out = vm.get_outputs(name)
    return list(out) if isinstance(out, tuple) else [out]


class Component:
    """``Component(out_dir, target)(*inputs)`` runs the compiled ``main`` on numpy/torch inputs. Needs only
    the TVM runtime and numpy. With ``remote`` (a ``tvm.rpc.connect`` session) the library is uploaded and
    loaded there (a Metal ``.tar`` is linked by the server), and runs on that machine's device."""

    def __init__(self, out_dir: str | Path, target: dict, remote=None):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        out = Path(out_dir)
        library = checked(out, LIBRARY_FILE[target["kind"]])  # the files compile wrote, or ArtifactError
        self.threads = threads.configure() if target["kind"] == "llvm" and remote is None else None
        self.device = device_for(target, remote)
        if remote is None:
            if target["kind"] == "cuda":
                cuda_jit(target.get("arch", "sm_90"))
            module = tvm.runtime.load_module(str(library))
        else:
            remote.upload(str(library))
            module = remote.load_module(library.name)
        # pooled: intermediate tensors reuse the memory of the previous call (the default allocator maps
        # fresh pages every call; on the full ViT trunk that was ~1.5 s of page faults per call)
        self.vm = VirtualMachine(module, self.device, memory_cfg="pooled")
        params = tvm.runtime.load_param_dict(checked(out, "params.bin").read_bytes())
        weights = [tvm.runtime.tensor(params[f"p{i}"].numpy(), self.device) for i in range(len(params))]
        packed = transform_params(self.vm, weights, remote=remote is not None)
        self.weights = weights if packed is None else packed
        self.remote = remote is not None
        self.main = self.vm["main"]

    def tensors(self, inputs) -> list:
        import tvm

        return [tvm.runtime.tensor(t.numpy() if hasattr(t, "numpy") else t, self.device) for t in inputs]

    def run_tensors(self, args: list) -> list:
        """Run on TVM tensors (from :meth:`tensors`); returns TVM tensors (adapters return tuples)."""
        if self.remote:
            return _stateful(self.vm, "main", [*args, *self.weights])
        return list(self.main(*args, *self.weights))

    def __call__(self, *inputs) -> list:
        return [t.numpy() for t in self.run_tensors(self.tensors(inputs))]
