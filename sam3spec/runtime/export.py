"""Export one component: build the model, run the original eagerly for reference outputs, apply the
export-phase substitutions, torch.export it, and check the exported program re-runs to the same numbers."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from sam3spec.runtime import checkpoint, model as model_lib, reference, samples, substitute
from sam3spec.runtime.loader import PARAMS_FILE, weight_match
from sam3spec.runtime.artifacts import atomic_path, checked, heartbeat, progress, record_files, step
from sam3spec.runtime.resolve import resolve


def cases(dims: dict[str, dict]) -> list[dict[str, int]]:
    """Dim values to check: the examples, then (if any dim is dynamic) every dim at its max."""
    example = {name: d["example"] for name, d in dims.items()}
    at_max = {name: d["max"] for name, d in dims.items()}
    return [example] + ([at_max] if at_max != example else [])


def dynamic_shapes(inputs: list[dict], dims: dict[str, dict]) -> tuple | None:
    """torch.export's dynamic_shapes (positional) for inputs whose shapes name dynamic dims."""
    if not dims:
        return None
    made = {name: torch.export.Dim(name, min=d["min"], max=d["max"]) for name, d in dims.items()}
    return tuple({axis: made[size] for axis, size in enumerate(spec["shape"]) if isinstance(size, str)} or None
                 for spec in inputs)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _as_tuple(out) -> tuple:
    return tuple(t.detach() for t in (out if isinstance(out, (tuple, list)) else (out,)))


def ops(program) -> list[str]:
    """The torch ops the program calls, by the overload name converters are keyed by (`linear.default`)."""
    return sorted({getattr(node.target, "__name__", str(node.target)) for node in program.graph.nodes
                   if node.op == "call_function"})


def write_params(module: torch.nn.Module, out: Path) -> dict:
    """params.bin from `module`, in the order that compile recorded in params.json (the library's weights, by
    state-dict name): for a library compiled on another machine, with weights too big to carry. Each weight
    must be the one compile saw (loader.weight_match): the same bytes, or the same seeded weights regenerated
    with last-bit differences (the reference is then computed from these very weights). Returns the counts."""
    import tvm

    recorded = json.loads(checked(out, PARAMS_FILE).read_text())
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    arrays, counts = {}, {"identical": 0, "close": 0}
    for i, entry in enumerate(recorded):
        array = state[entry["name"]].detach().cpu().numpy()
        match = weight_match(entry, array)
        if match is None:
            raise ValueError(f"weight {entry['name']} is not the one the library was compiled with "
                             f"(shape {list(array.shape)}, {array.dtype}): built with other weights or another seed")
        counts[match] += 1
        arrays[f"p{i}"] = tvm.runtime.tensor(array)
    with atomic_path(out / "params.bin") as tmp:
        tmp.write_bytes(tvm.runtime.save_param_dict(arrays))
    return counts


AUTOCAST_AVAILABLE = {"cpu": lambda: True, "cuda": lambda: torch.cuda.is_available(),
                      "mps": lambda: torch.backends.mps.is_available()}


def autocast_outputs(module: torch.nn.Module, runs: list, dtype: str, device: str = "cpu") -> list[tuple]:
    """The module's outputs under PyTorch's autocast to `dtype` on `device` (on the CPU again, float32; bool and
    integer as they are): what PyTorch's own reduced precision gives on the same inputs, which a float16 target
    is held to. The module goes to `device` for these runs and comes back."""
    kept = _move_tensor_attributes(module, device)
    try:
        module.to(device)
        with torch.no_grad(), torch.autocast(device, dtype=getattr(torch, dtype)):
            got = [_as_tuple(module(*[a.to(device) for a in args])) for args in runs]
    finally:
        module.to("cpu")
        for owner, name, value in kept:
            setattr(owner, name, value)
    return [tuple((t.float() if t.is_floating_point() else t).cpu() for t in case) for case in got]


def _moved(value, device):
    """`value` with its tensors on `device` (a tensor, or a tuple, list or dict holding them); None if it holds none."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) or _moved(v, device) is not None
                                                           for v in value):
        return type(value)(_moved(v, device) for v in value)
    if isinstance(value, dict) and value and all(_moved(v, device) is not None for v in value.values()):
        return {k: _moved(v, device) for k, v in value.items()}
    return None


def _move_tensor_attributes(module: torch.nn.Module, device: str) -> list:
    """Tensors that modules keep as plain attributes, not buffers (SAM3's decoder: compilable_cord_cache,
    coord_cache), which Module.to leaves behind, moved to `device`; returns what to put back afterwards."""
    kept = []
    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if name.startswith("_"):
                continue
            moved = _moved(value, device)
            if moved is not None:
                kept.append((sub, name, value))
                setattr(sub, name, moved)
    return kept


@contextlib.contextmanager
def cpu_build():
    """The model builds on the CPU where a GPU is visible too: SAM3's constructors put caches on "cuda" when
    torch sees one (build_on_cpu's substitutions ask torch.cuda.is_available), and the reference is a CPU run."""
    seen = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        yield
    finally:
        torch.cuda.is_available = seen


def run(*, model: dict, manifest_dir: str, component: str, adapter: str, inputs: list[dict],
        outputs: list[str], dims: dict[str, dict], seed: int, out_dir: str, reference_only: bool = False,
        autocast: dict | None = None) -> None:
    """reference_only: the weights (params.bin, from compile's params.json) and the reference, without
    torch.export: on the machine that runs a library compiled elsewhere. autocast ({dtype, device}, a
    reduced-precision target's rule): also keep PyTorch autocast's outputs, where that device is (else the
    reference step on the machine that has it computes them: port --verify-only there)."""
    out = Path(out_dir)
    with step(out, "reference" if reference_only else "export") as result:
        result["weights"] = checkpoint.weights_source(model["weights"], Path(manifest_dir))
        with cpu_build():
            net = model_lib.build_substituted(model, Path(manifest_dir))
        module = resolve(adapter)(model_lib.adapter_root(model, net)).eval()
        del net
        runs = [samples.make_all(inputs, case, seed + i) for i, case in enumerate(cases(dims))]
        progress(f"{component}: reference outputs from the original PyTorch code ({len(runs)} case(s))")
        with torch.no_grad(), heartbeat(f"{component}: PyTorch reference"):
            references = [_as_tuple(module(*args)) for args in runs]
        if len(references[0]) != len(outputs):
            raise ValueError(f"adapter returned {len(references[0])} outputs, the manifest names {len(outputs)}")
        reduced = [None] * len(runs)
        if autocast and AUTOCAST_AVAILABLE[autocast["device"]]():
            progress(f"{component}: PyTorch autocast {autocast['dtype']} outputs on the same inputs ({autocast['device']})")
            with heartbeat(f"{component}: PyTorch autocast"):
                reduced = autocast_outputs(module, runs, autocast["dtype"], autocast["device"])
            result["autocast"] = dict(autocast)
        elif autocast:
            result["autocast"] = {**autocast, "skipped": f"no {autocast['device']} device here"}
            progress(f"{component}: no {autocast['device']} device here for PyTorch autocast's outputs: the reference "
                     "step where it is computes them (port --verify-only)")
        saved = [{"inputs": args, "outputs": ref, "autocast": ac} for args, ref, ac in zip(runs, references, reduced)]
        if reference_only:
            result["params"] = write_params(module, out)
            with atomic_path(out / reference.FILE) as tmp:
                reference.save(tmp, [i["name"] for i in inputs], outputs, saved)
            record_files(result, out, ["params.bin", reference.FILE])
            progress(f"{component}: weights ({result['params']['identical']} identical to compile's, "
                     f"{result['params']['close']} regenerated within 1e-5) and the reference written")
            return
        result["substitutions"] = substitute.apply(model.get("substitutions", []), "export", root=module)
        progress(f"{component}: torch.export (strict=False)")
        with torch.no_grad(), heartbeat(f"{component}: torch.export"):
            program = torch.export.export(module, tuple(runs[0]), dynamic_shapes=dynamic_shapes(inputs, dims),
                                          strict=False)
        # Functionalise only (no decomposition table): in-place ops such as clamp_ and masked_fill_ become
        # their functional forms, and no_grad regions are inlined; linear, sdpa and the like stay whole.
        program = program.run_decompositions({})
        with torch.no_grad():  # the exported program, export-phase substitutions included, vs the original
            rerun = [_as_tuple(program.module()(*args)) for args in runs]
        result["exported_vs_original_max_abs"] = max(
            max_abs(a, b) for ref, rr in zip(references, rerun) for a, b in zip(ref, rr))
        with atomic_path(out / "program.pt2") as tmp:
            torch.export.save(program, tmp)
        with atomic_path(out / reference.FILE) as tmp:
            reference.save(tmp, [i["name"] for i in inputs], outputs, saved)
        record_files(result, out, ["program.pt2", reference.FILE])
        result["ops"] = ops(program)
        progress(f"{component}: exported; program re-run max abs diff {result['exported_vs_original_max_abs']:.3g}")
