"""Compile one exported component with TVM: Relax import (with the manifest's converters), the named
pipeline, and a library with the weights kept as inputs (saved beside it)."""

from __future__ import annotations

from pathlib import Path

import torch

from sam3spec.runtime import kernels
from sam3spec.runtime.artifacts import atomic_path, checked, heartbeat, progress, record_files, step, write_json
from sam3spec.runtime.loader import LIBRARY_FILE, PARAMS_FILE, describe_weight
from sam3spec.runtime.resolve import resolve


def tvm_target(target: dict):
    """The manifest's target as a tvm Target; ``mcpu: host`` names the CPU this runs on (LLVM's name for it),
    so the code uses its vector width (AVX-512 where there is one) without naming a CPU in the manifest."""
    import tvm

    def _resolve(t: dict) -> dict:
        t = dict(t)
        if t.get("mcpu") == "host":
            t["mcpu"] = str(tvm.target.codegen.llvm_get_system_cpu())
        if isinstance(t.get("host"), dict):
            t["host"] = _resolve(t["host"])
        return t

    return tvm.target.Target(_resolve(target))


def own_constants(func):
    """Copy every bound constant into TVM-owned memory.

    The frontend wraps torch buffers with DLPack, sharing torch's memory; such constants were serialised
    wrongly into the VM executable ("Invalid DLTensor file format" when the library is loaded).
    """
    import numpy as np
    from tvm import relax

    @relax.expr_functor.mutator
    class _Copy(relax.PyExprMutator):
        def visit_constant_(self, op):
            return relax.const(np.array(op.data.numpy(), copy=True), str(op.data.dtype))

    return _Copy().visit_expr(func)


def device_sources(executable) -> dict[str, str]:
    """The GPU kernels' source, by language (``metal``: Metal Shading Language, ``cuda``), for review."""
    found = {}
    pending = list(executable.mod.imports)
    while pending:
        module = pending.pop()
        pending.extend(module.imports)
        if module.kind in SOURCE_FILE:
            found[module.kind] = module.inspect_source(module.kind)
    return found


SOURCE_FILE = {"metal": "kernels.metal", "cuda": "kernels.cu"}  # by module kind, which names the language too


# apache-tvm 0.27's CUDA codegen keeps CUDA C in the library (it has no CUDA runtime to build against); the
# runtime compiles it when the library is loaded (loader.cuda_jit: nvcc on the GPU machine).
CUDA_CODE = "CUDA C source in the library, compiled for the GPU when loaded (runtime.loader.cuda_jit)"


def weight_names(func, program) -> list[str]:
    """The state-dict name of each weight parameter of the imported ``main``, in order."""
    by_placeholder = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
                      if spec.target is not None}
    return [by_placeholder[p.name] for p in func.params[int(func.attrs["num_input"]):]]


def import_program(out: Path, component: str, converters: dict[str, str]):
    """The exported program in `out` as a Relax module with its weights detached: (module, params, names)."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    program = torch.export.load(checked(out, "program.pt2"))
    progress(f"{component}: importing into Relax")
    mod = from_exported_program(program, keep_params_as_input=True, run_ep_decomposition=False,
                                custom_convert_map={op: resolve(fn) for op, fn in converters.items()})
    names = weight_names(mod["main"], program)
    mod, params = relax.frontend.detach_params(mod)
    mod["main"] = own_constants(mod["main"])
    return mod, params, names


def run(*, component: str, target: dict, pipeline: str, converters: dict[str, str], dynamic: bool,
        out_dir: str, pipeline_options: dict | None = None, pass_config: dict | None = None,
        records: str | None = None) -> None:
    import tvm

    out = Path(out_dir)
    with step(out, "compile") as result:
        mod, params, names = import_program(out, component, converters)
        with atomic_path(out / "relax.py") as tmp:
            tmp.write_text(mod.script(show_meta=False))
        with atomic_path(out / "params.bin") as tmp:
            tmp.write_bytes(tvm.runtime.save_param_dict({f"p{i}": p for i, p in enumerate(params["main"])}))
        write_json(out / PARAMS_FILE, [describe_weight(name, p.numpy()) for name, p in zip(names, params["main"])])
        tgt = tvm_target(target)
        if target["kind"] == "cuda":
            result["cuda"] = CUDA_CODE
        result["target"] = str(tgt)
        result["pipeline"] = {"name": pipeline, "options": dict(pipeline_options or {})}
        options = dict(pipeline_options or {}, **({"records": records} if records else {}))
        if pass_config:
            result["pass_config"] = dict(pass_config)
        progress(f"{component}: compiling for {target['kind']} with {pipeline} {pipeline_options or ''}")
        with heartbeat(f"{component}: compiling"), tvm.transform.PassContext(config=dict(pass_config or {})):
            executable = tvm.compile(mod, target=tgt, relax_pipeline=resolve(pipeline)(
                tgt, dynamic_shapes=dynamic, stats=result.setdefault("schedule", {}), **options))
        if records:
            result["records"] = {"directory": records, "kernels": result["schedule"].pop("from_records", 0)}
            progress(f"{component}: {result['records']['kernels']} kernels from tuning records")
        for kind, source in device_sources(executable).items():
            with atomic_path(out / SOURCE_FILE[kind]) as tmp:
                tmp.write_text(source)
            result.setdefault("sources", []).append(SOURCE_FILE[kind])
            result["kernels"] = kernels.count(kind, source)
            progress(f"{component}: {result['kernels']['kernels']} {kind} kernels, "
                     f"{result['kernels']['matrix_unit']} on the matrix units ({kernels.MATRIX_UNIT[kind]})")
            if kind == "metal":
                result["metal_check"] = kernels.metal_check(source, result["schedule"].get("threads", {}))
                progress(f"{component}: Metal limits check: " + ("passed" if result["metal_check"]["ok"] else
                                                                 "; ".join(result["metal_check"]["problems"])))
        with atomic_path(out / LIBRARY_FILE[target["kind"]]) as tmp:
            executable.export_library(str(tmp))
        result["library"] = LIBRARY_FILE[target["kind"]]
        record_files(result, out, ["params.bin", PARAMS_FILE, result["library"], *result.get("sources", [])])
        result["num_params"] = len(params["main"])
        progress(f"{component}: compiled")
