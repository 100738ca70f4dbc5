"""Weights laid out once at load time: a matmul whose right operand is a weight (a parameter, or a
transposed one, as ``linear`` gives) reads it as K x ``col`` panels, ``w[k, n] -> wp[n // col, k, n % col]``,
and :func:`lift` moves that re-layout (and the transpose) into ``main_transform_params``, which the
runtime calls once when it loads the weights. Without it every call transposed and re-packed each weight.
"""

from __future__ import annotations

import tvm
from tvm import relax, te

_MATMUL = tvm.ir.Op.get("relax.matmul")
_PERMUTE = tvm.ir.Op.get("relax.permute_dims")

# Below this many weight elements a panel re-layout is not worth a separate kernel.
MIN_WEIGHT_ELEMENTS = 4096


def packed_matmul(x: te.Tensor, wp: te.Tensor) -> te.Tensor:
    """x [..., M, K] @ w [K, N], with w given as panels wp [N // col, K, col]."""
    col = int(wp.shape[2])
    n = wp.shape[0] * col
    rk = te.reduce_axis((0, x.shape[-1]), name="k")

    def _sum(*idx):
        j = idx[-1]
        return te.sum(x[(*idx[:-1], rk)] * wp[j // col, rk, j % col], axis=rk)

    return te.compute((*x.shape[:-1], n), _sum, name="matmul_packed")


def _static_2d(expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    if shape is None or len(shape) != 2:
        return None
    try:
        return [int(d) for d in shape]
    except (TypeError, ValueError):
        return None


@relax.expr_functor.mutator
class _Prepack(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, col: int):
        super().__init__(mod)
        self.col = col
        self.weights: set = set()
        self.packed = 0

    def _is_weight(self, expr) -> bool:
        if isinstance(expr, relax.Var) and expr in self.weights:
            return True
        bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        return (isinstance(bound, relax.Call) and bound.op.same_as(_PERMUTE)
                and isinstance(bound.args[0], relax.Var) and bound.args[0] in self.weights)

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not call.op.same_as(_MATMUL) or len(call.args) != 2:
            return call
        x, w = call.args
        shape = _static_2d(w)
        if (shape is None or shape[1] % self.col or shape[0] * shape[1] < MIN_WEIGHT_ELEMENTS
                or str(x.ty.dtype) != "float32" or str(w.ty.dtype) != "float32" or not self._is_weight(w)):
            return call
        col = self.col
        wp = self.builder_.emit(relax.op.layout_transform(w, index_map=lambda k, n: (n // col, k, n % col)))
        self.packed += 1
        return self.builder_.call_te(packed_matmul, x, wp, primfunc_name_hint="matmul_packed")

    def run(self, mod: tvm.IRModule) -> tvm.IRModule:
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function) or "num_input" not in (func.attrs or {}):
                continue
            self.weights = set(func.params[int(func.attrs["num_input"]):])
            self.builder_.update_func(gvar, self.visit_expr(func))
        return self.builder_.get()


def pack_weights(col: int) -> tvm.transform.Pass:
    """Rewrite weight matmuls of functions with a ``num_input`` attribute to read ``col``-wide panels."""

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.PackWeights")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return _Prepack(mod, col).run(mod)

    return _pass


def lift() -> list:
    """Move everything that depends only on the weights into ``<func>_transform_params``."""
    return [relax.transform.LiftTransformParams(), relax.transform.DeadCodeElimination()]
