"""Export one component: build the model, run the original eagerly for reference outputs, apply the
export-phase substitutions, torch.export it, and check the exported program re-runs to the same numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from sam3spec.runtime import model as model_lib, samples, substitute
from sam3spec.runtime.artifacts import atomic_path, heartbeat, progress, step
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


def run(*, model: dict, manifest_dir: str, component: str, adapter: str, inputs: list[dict],
        outputs: list[str], dims: dict[str, dict], seed: int, out_dir: str) -> None:
    out = Path(out_dir)
    with step(out, "export") as result:
        result["weights"] = model_lib.weights_source(model["weights"], Path(manifest_dir))
        net = model_lib.build_substituted(model, Path(manifest_dir))
        module = resolve(adapter)(net).eval()
        del net
        runs = [samples.make_all(inputs, case, seed + i) for i, case in enumerate(cases(dims))]
        progress(f"{component}: reference outputs from the original PyTorch code ({len(runs)} case(s))")
        with torch.no_grad(), heartbeat(f"{component}: PyTorch reference"):
            references = [_as_tuple(module(*args)) for args in runs]
        if len(references[0]) != len(outputs):
            raise ValueError(f"adapter returned {len(references[0])} outputs, the manifest names {len(outputs)}")
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
        with atomic_path(out / "reference.pt") as tmp:
            torch.save({"input_names": [i["name"] for i in inputs], "output_names": outputs,
                        "cases": [{"inputs": args, "outputs": ref} for args, ref in zip(runs, references)]}, tmp)
        progress(f"{component}: exported; program re-run max abs diff {result['exported_vs_original_max_abs']:.3g}")
