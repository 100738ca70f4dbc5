"""Load a compiled component: its library into a Relax VM on the target's device, and its weights, laid
out once by the library's ``main_transform_params`` when the pipeline made one (pipelines/prepack.py)."""

from __future__ import annotations

import json
from pathlib import Path

from sam3spec.runtime import threads

DEVICES = {"llvm": "cpu", "cuda": "cuda", "metal": "metal"}
LIBRARY_FILE = {"llvm": "lib.so", "cuda": "lib.so", "metal": "lib.tar"}


def device_for(target: dict):
    """The TVM device of a manifest target (``tvm.cpu()``, ``tvm.cuda()``, ...); check ``.exist``."""
    import tvm

    return getattr(tvm, DEVICES[target["kind"]])()


def compiled(out_dir: str | Path) -> bool:
    """Whether out_dir holds a compiled component: its compile.json says ok and its library is there."""
    step = Path(out_dir) / "compile.json"
    if not step.is_file():
        return False
    result = json.loads(step.read_text())
    return result.get("status") == "ok" and (Path(out_dir) / result.get("library", "")).is_file()


def transform_params(vm, weights: list) -> list | None:
    """The weights laid out as ``main`` takes them by ``main_transform_params``; None if there is none."""
    try:
        transform = vm["main_transform_params"]
    except AttributeError:  # the pipeline packed no weights
        return None
    return list(transform(weights))


class Component:
    """``Component(out_dir, target)(*inputs)`` runs the compiled ``main`` on numpy/torch inputs."""

    def __init__(self, out_dir: str | Path, target: dict):
        import tvm
        from tvm import relax

        out = Path(out_dir)
        self.threads = threads.configure() if target["kind"] == "llvm" else None
        self.device = device_for(target)
        # pooled: intermediate tensors reuse the memory of the previous call (the default allocator maps
        # fresh pages every call; on the full ViT trunk that was ~1.5 s of page faults per call)
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / LIBRARY_FILE[target["kind"]])),
                                       self.device, memory_cfg="pooled")
        params = tvm.runtime.load_param_dict((out / "params.bin").read_bytes())
        weights = [tvm.runtime.tensor(params[f"p{i}"].numpy(), self.device) for i in range(len(params))]
        packed = transform_params(self.vm, weights)
        self.weights = weights if packed is None else packed
        self.main = self.vm["main"]

    def tensors(self, inputs) -> list:
        import tvm

        return [tvm.runtime.tensor(t.numpy() if hasattr(t, "numpy") else t, self.device) for t in inputs]

    def run_tensors(self, args: list) -> list:
        """Run on TVM tensors (from :meth:`tensors`); returns TVM tensors (adapters return tuples)."""
        return list(self.main(*args, *self.weights))

    def __call__(self, *inputs) -> list:
        return [t.numpy() for t in self.run_tensors(self.tensors(inputs))]
