"""Values that depend on no input and no weight computed once, at compile time, and kept as constants: SAM's
prompt encoder builds the dense positional encoding of its 72 x 72 grid from ``torch.ones``, cumsum, a fixed
random matrix, sin and cos on every call (3.9 ms of the SAM mask decoder's 51 on 2 CPU cores). Relax's
FoldConstant does not start such a chain: it leaves creation ops (``full``) alone, and cumsum is legalised later.
Each value is evaluated by building the bindings it needs into a small function for this CPU; values above
``max_bytes`` stay computed (a constant is stored in the library)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule

from sam3spec.pipelines import static_shape

MAX_BYTES = 16 << 20


def _input_free(func: relax.Function) -> tuple[dict, list]:
    """(var -> binding value, in order) of the bindings of `func`'s dataflow blocks that use no parameter and no
    other binding that does, and the ones among them that a binding outside the set uses (the frontier)."""
    free: dict = {}
    frontier: list = []
    for block in func.body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                continue
            used = relax.analysis.free_vars(binding.value)
            if (all(v in free for v in used) and not relax.analysis.free_symbolic_vars(binding.value)
                    and not isinstance(binding.value, (relax.Tuple, relax.TupleGetItem))):
                free[binding.var] = binding.value
                continue
            frontier += [v for v in used if v in free and v not in frontier]
    outputs = [v for v in relax.analysis.free_vars(func.body.body) if v in free]
    return free, frontier + [v for v in outputs if v not in frontier]


def _fits(var, max_bytes: int) -> bool:
    """Whether `var` is a tensor of a static shape whose bytes are at most `max_bytes`."""
    shape = static_shape(var)
    return shape is not None and int(np.prod(shape)) * tvm.DataType(str(var.ty.dtype)).bits // 8 <= max_bytes


def _needed(free: dict, var) -> dict:
    """The bindings of `free` that `var`'s value needs (itself included), in binding order."""
    need, todo = set(), [var]
    while todo:
        v = todo.pop()
        if v not in need:
            need.add(v)
            todo += [u for u in relax.analysis.free_vars(free[v]) if u in free]
    return {v: e for v, e in free.items() if v in need}


def _evaluate(free: dict, wanted: list) -> list:
    """The values of `wanted`, computed on this CPU from the bindings in `free`."""
    bb = relax.BlockBuilder()
    with bb.function("main", []):
        with bb.dataflow():
            renamed = {}
            for var, value in free.items():
                renamed[var] = bb.emit(_Rename(renamed).visit_expr(value))
            out = bb.emit_output(relax.Tuple([renamed[v] for v in wanted]))
        bb.emit_func_output(out)
    executable = tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"}))
    result = relax.VirtualMachine(executable, tvm.cpu())["main"]()
    return [result[i].numpy() for i in range(len(wanted))]


@relax.expr_functor.mutator
class _Rename(relax.PyExprMutator):
    def __init__(self, renamed: dict):
        super().__init__()
        self.renamed = renamed

    def visit_var_(self, op):  # noqa: D102 - the emitted copy of an input-free binding
        return self.renamed.get(op, op)

    def visit_dataflow_var_(self, op):  # noqa: D102
        return self.renamed.get(op, op)


@relax.expr_functor.mutator
class _Substitute(relax.PyExprMutator):
    def __init__(self, constants: dict):
        super().__init__()
        self.constants = constants

    def visit_var_binding_(self, binding):  # noqa: D102 - a folded value is bound to its constant
        if binding.var in self.constants:
            self.builder_.emit_normalized(relax.VarBinding(binding.var, self.constants[binding.var]))
            return
        super().visit_var_binding_(binding)


def fold(max_bytes: int = MAX_BYTES) -> tvm.transform.Pass:
    """The pass: in `main`, each input-free value that the rest uses (and fits `max_bytes`) as a constant;
    the bindings only it needed are then dead and removed."""

    @tvm.transform.module_pass(opt_level=0, name="FoldInputFree")
    def _pass(mod: IRModule, _ctx) -> IRModule:
        if "main" not in [g.name_hint for g in mod.functions]:
            return mod
        func = mod["main"]
        free, frontier = _input_free(func)
        wanted = [v for v in frontier if _fits(v, max_bytes) and not isinstance(free[v], type(relax.const(0.0)))]
        if not wanted:
            return mod
        constants = {}
        for var in wanted:
            try:
                (value,) = _evaluate(_needed(free, var), [var])
            except Exception:  # pylint: disable=broad-except - a value this cannot build stays computed
                continue
            if str(value.dtype) == str(var.ty.dtype) and list(value.shape) == [int(d) for d in var.ty.shape]:
                constants[var] = relax.const(value, str(value.dtype))  # relax.const alone makes int64 int32
        if not constants:
            return mod
        mod = mod.clone()
        mod["main"] = _Substitute(constants).visit_expr(func)
        return relax.transform.DeadCodeElimination(["main"])(mod)

    return _pass
