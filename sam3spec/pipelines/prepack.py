"""Weights laid out once at load time: a matmul whose right operand is a weight (a parameter, or a
transposed one, as ``linear`` gives; or a conv2d whose kernel covers its whole input) reads it as K x
``col`` panels, ``w[k, n] -> wp[n // col, k, n % col]``, and :func:`lift` moves that re-layout (and the
transpose) into ``main_transform_params``, which the runtime calls once when it loads the weights.
Without it every call transposed and re-packed each weight.
"""

from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.relax.utils import copy_with_new_vars

from sam3spec.pipelines import plain_conv2d, static_shape

_MATMUL = tvm.ir.Op.get("relax.matmul")
_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")

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

    rows = x.shape[:-1]
    if all(isinstance(d, tvm.tirx.IntImm) for d in rows):
        return te.compute((*rows, n), _sum, name="matmul_packed")
    # symbolic rows: panels as an axis of their own, so every read is a plain index and the CPU rules can pad
    # the rows to whole register tiles (pad_einsum takes einsums only); the flat result is a view of it
    panels = te.compute((*rows, wp.shape[0], col),
                        lambda *i: te.sum(x[(*i[:-2], rk)] * wp[i[-2], rk, i[-1]], axis=rk), name="matmul_packed")
    return te.compute((*rows, n), lambda *i: panels[(*i[:-1], i[-1] // col, i[-1] % col)], name="matmul_flat")


@relax.expr_functor.mutator
class _Prepack(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, col: int):
        super().__init__(mod)
        self.col = col
        self.weights: set = set()
        self.derived: dict = {}
        self.packed = 0

    def _is_weight(self, expr) -> bool:
        """Whether `expr` depends on the weights only (a parameter, or a transpose / slice / reshape of
        parameters): what LiftTransformParams can compute once."""
        if isinstance(expr, relax.Tuple):
            return all(self._is_weight(field) for field in expr.fields)
        if not isinstance(expr, relax.Var):
            return not isinstance(expr, relax.Call)  # constants, shapes, prim values
        if expr in self.weights:
            return True
        if expr not in self.derived:
            self.derived[expr] = False  # no cycles in dataflow, but stay safe
            bound = self.lookup_binding(expr)
            if isinstance(bound, relax.Call):
                parts = list(bound.args)
            elif isinstance(bound, relax.TupleGetItem):
                parts = [bound.tuple_value]
            elif isinstance(bound, relax.Tuple):
                parts = list(bound.fields)
            else:
                parts = None
            self.derived[expr] = parts is not None and all(self._is_weight(p) for p in parts)
        return self.derived[expr]

    def _window_conv(self, call):
        """conv2d whose kernel covers the whole input (one output position) with a weight parameter, as
        x [N, C*H*W] @ w [O, C*H*W]^T reshaped to [N, O, 1, 1]; else None."""
        x, w = call.args
        kshape, dshape = static_shape(w), static_shape(x, skip=1)
        if (kshape is None or dshape != kshape[1:] or kshape[0] % self.col or not plain_conv2d(call.attrs, "OIHW")
                or str(x.ty.dtype) != "float32" or str(w.ty.dtype) != "float32" or not self._is_weight(w)):
            return None
        n, reduced = x.ty.shape[0], kshape[1] * kshape[2] * kshape[3]
        rows = self.builder_.emit(relax.op.reshape(x, [n, reduced]))
        w_t = self.builder_.emit(relax.op.permute_dims(relax.op.reshape(w, [kshape[0], reduced])))
        product = self.builder_.emit(self._packed(rows, w_t))
        return relax.op.reshape(product, [n, kshape[0], 1, 1])

    def _packed(self, x, w):
        col = self.col
        wp = self.builder_.emit(relax.op.layout_transform(w, index_map=lambda k, n: (n // col, k, n % col)))
        self.packed += 1
        return self.builder_.call_te(packed_matmul, x, wp, primfunc_name_hint="matmul_packed")

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if call.op.same_as(_CONV2D):
            rewritten = self._window_conv(call)
            return call if rewritten is None else rewritten
        if not call.op.same_as(_MATMUL) or len(call.args) != 2:
            return call
        x, w = call.args
        shape = static_shape(w)
        if (shape is None or len(shape) != 2 or shape[1] % self.col or shape[0] * shape[1] < MIN_WEIGHT_ELEMENTS
                or str(x.ty.dtype) != "float32" or str(w.ty.dtype) != "float32" or not self._is_weight(w)):
            return call
        return self._packed(x, w)

    def run(self, mod: tvm.IRModule) -> tvm.IRModule:
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function) or "num_input" not in (func.attrs or {}):
                continue
            self.weights = set(func.params[int(func.attrs["num_input"]):])
            self.derived = {}
            self.builder_.update_func(gvar, self.visit_expr(func))
        return self.builder_.get()


def pack_weights(col: int, stats: dict | None = None) -> tvm.transform.Pass:
    """Rewrite weight matmuls of functions with a ``num_input`` attribute to read ``col``-wide panels;
    ``stats["packed_weights"]`` counts them."""

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.PackWeights")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Prepack(mod, col)
        mod = rewriter.run(mod)
        if stats is not None and rewriter.packed:
            stats["packed_weights"] = stats.get("packed_weights", 0) + rewriter.packed
        return mod

    return _pass


def lift() -> list:
    """Move everything that depends only on the weights into ``<func>_transform_params``, and give each of
    those a ``_flat`` twin that takes the weights one by one (TVM's RPC cannot pass a tuple argument)."""
    return [relax.transform.LiftTransformParams(), relax.transform.DeadCodeElimination(), flat_transform_params]


@tvm.transform.module_pass(opt_level=0, name="sam3spec.FlatTransformParams")
def flat_transform_params(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """``<func>_transform_params_flat(p0, p1, ...)`` = ``<func>_transform_params((p0, p1, ...))``: a library
    driven over TVM's RPC (a Mac's Metal device from Linux) can call it, which it cannot the tuple form."""
    for gvar, func in list(mod.functions_items()):
        if not (isinstance(func, relax.Function) and gvar.name_hint.endswith("_transform_params")
                and len(func.params) == 1 and isinstance(func.params[0].ty, relax.TupleType)):
            continue
        # a copy of the function whose body starts by binding its tuple parameter to a tuple of the new
        # ones (no call between functions: relax FastMath's mutator fails on a call to a GlobalVar)
        copy = copy_with_new_vars(func)
        weights = [relax.Var(f"p{i}", ty) for i, ty in enumerate(copy.params[0].ty.fields)]
        body = relax.SeqExpr([relax.BindingBlock([relax.VarBinding(copy.params[0], relax.Tuple(weights))]),
                              *copy.body.blocks], copy.body.body)
        name = gvar.name_hint + "_flat"
        mod[name] = relax.Function(weights, body, copy.ret_ty, copy.is_pure, copy.attrs).with_attr(
            "global_symbol", name)
    return mod
