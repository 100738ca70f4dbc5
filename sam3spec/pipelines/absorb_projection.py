"""Attention of a few queries over many keys without projecting the keys: per head h,
``q (X Wk + bk)_hᵀ = (q Wk_hᵀ) Xᵀ + q bk_hᵀ`` and ``P (X Wv + bv)_h = (P X) Wv_h + rowsum(P) bv_h``.

The N x C key source X is then read, not projected to N x H·D and transposed per head: with n queries that is
2·H·n·C·N multiply-adds per side instead of 2·N·C·H·D, fewer wherever n < D. SAM3's geometry encoder attends with
6 prompt tokens (at most 17) over 5184 image tokens at D = 32: its key and value projections were 21 of its 33 ms
on the CPU. Where the query count is symbolic its upper bound (``tir_var_upper_bound``) decides.

The rewrite applies to ``matmul(q, K)`` and ``matmul(p, V)`` whose K ([.., H, D, N]) or V ([.., H, N, D]) is a
chain of reshapes and transposes of ``X @ W (+ b)``; the chain's index map is checked by running it on an
arange, so only an exact head split matches. Equal up to summation order.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from sam3spec.pipelines import bound_call, shape_of, static_shape

_OPS = {name: tvm.ir.Op.get(f"relax.{name}") for name in ("matmul", "add", "reshape", "permute_dims")}


@relax.expr_functor.mutator
class _Absorb(relax.PyExprMutator):
    bounds: tvm.sym.Analyzer | None = None

    def _bound(self, expr, op: str):
        return bound_call(self, expr, _OPS[op])

    def _projection(self, operand):
        """(X, W, bias or None, chain) when `operand` is reshapes/transposes (`chain`, outermost first) of
        X @ W (+ bias), X [N, C] and W [C, M] static."""
        chain, expr = [], operand
        while True:
            call = self._bound(expr, "reshape")
            call = self._bound(expr, "permute_dims") if call is None else call
            if call is None:
                break
            chain.append(call)
            expr = call.args[0]
        bias, add = None, self._bound(expr, "add")
        if add is not None:
            expr, bias = add.args
            if self._bound(expr, "matmul") is None:
                bias, expr = add.args
        matmul = self._bound(expr, "matmul")
        if matmul is None or not chain:
            return None
        x, w = matmul.args
        xs, ws, out = static_shape(x), static_shape(w), static_shape(operand)
        if xs is None or ws is None or out is None or len(xs) != 2 or len(ws) != 2 or xs[1] != ws[0]:
            return None
        if bias is not None and static_shape(bias) != [ws[1]]:
            return None
        return x, w, bias, chain

    @staticmethod
    def _index(chain, n_keys: int, width: int) -> np.ndarray | None:
        """The chain run on arange(N * M).reshape(N, M): where each element of X @ W ends up."""
        index = np.arange(n_keys * width).reshape(n_keys, width)
        for call in reversed(chain):
            if call.op.same_as(_OPS["reshape"]):
                shape = static_shape(call)
                if shape is None:
                    return None
                index = index.reshape(shape)
            else:
                axes = call.attrs.axes
                index = index.transpose(None if axes is None else [int(a) for a in axes])
        return index

    def _few_queries(self, rows, head_dim: int) -> bool:
        bound = self.bounds.const_int_bound(rows)
        return bound.max_value < head_dim

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not call.op.same_as(_OPS["matmul"]):
            return call
        lhs, rhs = call.args
        found = self._projection(rhs)
        lhs_dims, out_dims = shape_of(lhs), shape_of(call)
        if found is None or lhs_dims is None or out_dims is None or len(lhs_dims) < 3:
            return call
        x, w, bias, chain = found
        (n_keys, channels), width = static_shape(x), static_shape(w)[1]
        *lead, heads, rows, _ = lhs_dims
        static = all(isinstance(d, tvm.tirx.IntImm) for d in (*lead, heads))
        if not static or any(int(d) != 1 for d in lead) or width % int(heads):
            return call
        heads = int(heads)
        head_dim = width // heads
        if not self._few_queries(rows, head_dim):
            return call
        index = self._index(chain, n_keys, width)
        if index is None:
            return call
        split = np.arange(n_keys * width).reshape(n_keys, heads, head_dim)
        lead_ones = (1,) * len(lead)
        keys = split.transpose(1, 2, 0).reshape(lead_ones + (heads, head_dim, n_keys))
        values = split.transpose(1, 0, 2).reshape(lead_ones + (heads, n_keys, head_dim))
        emit, op = self.builder_.emit, relax.op
        hn = heads * rows
        if index.shape == keys.shape and np.array_equal(index, keys):
            w_heads = emit(op.permute_dims(op.reshape(w, [channels, heads, head_dim]), [1, 2, 0]))  # [H, D, C]
            q = emit(op.reshape(lhs, [heads, rows, head_dim]))
            q_in = emit(op.reshape(emit(op.matmul(q, w_heads)), [hn, channels]))
            scores = emit(op.matmul(q_in, emit(op.permute_dims(x, [1, 0]))))                       # [H·n, N]
            if bias is not None:
                q_bias = emit(op.matmul(q, op.reshape(bias, [heads, head_dim, 1])))                 # [H, n, 1]
                scores = emit(op.add(scores, op.reshape(q_bias, [hn, 1])))
            return op.reshape(scores, out_dims)
        if index.shape == values.shape and np.array_equal(index, values):
            p = emit(op.reshape(lhs, [hn, n_keys]))
            px = emit(op.reshape(emit(op.matmul(p, x)), [heads, rows, channels]))                 # [H, n, C]
            w_heads = emit(op.permute_dims(op.reshape(w, [channels, heads, head_dim]), [1, 0, 2]))  # [H, C, D]
            out = emit(op.matmul(px, w_heads))
            if bias is not None:
                total = emit(op.reshape(op.sum(p, axis=[1], keepdims=True), [heads, rows, 1]))
                out = emit(op.add(out, op.multiply(total, op.reshape(bias, [heads, 1, head_dim]))))
            return op.reshape(out, out_dims)
        return call


def _bounds(func: relax.Function) -> tvm.sym.Analyzer:
    """An analyzer that knows the function's symbolic sizes' declared ranges."""
    analyzer = tvm.sym.Analyzer()
    attrs = dict(func.attrs) if func.attrs is not None else {}
    lower, upper = attrs.get("tir_var_lower_bound", {}), attrs.get("tir_var_upper_bound", {})
    for var in relax.analysis.defined_symbolic_vars(func):
        if var.name in upper:
            analyzer.bind(var, tvm.ir.Range(int(lower.get(var.name, 0)), int(upper[var.name]) + 1))
    return analyzer


def absorb() -> list[tvm.transform.Pass]:
    """The rewrite, then common subexpressions merged (several layers' X + pos and Xᵀ are one) and unused
    bindings (the projections) removed."""

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.AbsorbProjection")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Absorb(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.bounds = _bounds(func)
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return [_pass, relax.transform.EliminateCommonSubexpr(), relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination()]
